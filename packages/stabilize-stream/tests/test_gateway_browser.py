"""End to end: the timeline page in headless Chromium follows a running workflow.

Chromium is driven over the Chrome DevTools Protocol with the ``websockets`` client. The
test skips when ``/usr/bin/chromium`` is missing (``.ci/run`` installs Debian's package).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: make gateway_helpers importable

from gateway_helpers import HANG_GUARD, GatewayFactory, engine_registry, run_engine

from stabilize import StageExecution, TaskExecution, TaskResult, TransientError, Workflow

if TYPE_CHECKING:
    from conftest import StreamEngine

pytest_plugins = ["gateway_fixtures"]

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "browser-token"

pytestmark = [
    pytest.mark.parametrize("db", ["sqlite"], indirect=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


class DevTools:
    """A minimal Chrome DevTools Protocol client over one WebSocket."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0

    async def read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            future = self._pending.pop(message.get("id", -1), None)
            if future is None:
                self.events.put_nowait(message)
            elif "error" in message:
                future.set_exception(AssertionError(f"DevTools error: {message['error']}"))
            else:
                future.set_result(message.get("result", {}))

    async def call(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        await self.ws.send(json.dumps(message))
        return await asyncio.wait_for(future, HANG_GUARD)

    async def evaluate(self, session: str, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate",
            {"expression": expression, "awaitPromise": True, "returnByValue": True},
            session,
        )
        if "exceptionDetails" in result:
            raise AssertionError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def until(self, session: str, condition: str) -> Any:
        """Wait (in the page, on DOM changes) until the JS ``condition`` is truthy."""
        what = json.dumps(f"timed out waiting for: {condition}")
        return await self.evaluate(
            session,
            f"""new Promise((resolve, reject) => {{
                const check = () => {{ const v = ({condition}); if (v) resolve(v); return v; }};
                if (check()) return;
                const seen = new MutationObserver(() => {{ if (check()) seen.disconnect(); }});
                seen.observe(document.documentElement,
                    {{subtree: true, childList: true, attributes: true, characterData: true}});
                setTimeout(() => reject(new Error({what})), {int(HANG_GUARD * 1000) - 5000});
            }})""",
        )


def devtools_port(user_data: Path, chromium: subprocess.Popen[bytes]) -> str:
    """Chromium's ``DevToolsActivePort`` file: the browser endpoint, once it listens."""
    port_file = user_data / "DevToolsActivePort"
    deadline = time.monotonic() + HANG_GUARD
    while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
        if chromium.poll() is not None:
            raise AssertionError(f"chromium exited with {chromium.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("chromium wrote no DevToolsActivePort")
        time.sleep(0.02)  # a file to appear: there is nothing to wait on
    port, path = port_file.read_text().splitlines()[:2]
    return f"ws://127.0.0.1:{port}{path}"


@asynccontextmanager
async def browser(url: str, user_data: Path) -> AsyncIterator[tuple[DevTools, str]]:
    """Headless Chromium showing ``url``; yields DevTools and the page's session id."""
    chromium = subprocess.Popen(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={user_data}",
            "--remote-debugging-port=0",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        endpoint = await asyncio.to_thread(devtools_port, user_data, chromium)
        async with connect(endpoint, max_size=None, open_timeout=HANG_GUARD) as ws:
            tools = DevTools(ws)
            reader = asyncio.create_task(tools.read())
            try:
                targets = (await tools.call("Target.getTargets"))["targetInfos"]
                page = next(t for t in targets if t["type"] == "page")
                attached = await tools.call(
                    "Target.attachToTarget", {"targetId": page["targetId"], "flatten": True}
                )
                session = attached["sessionId"]
                await tools.call("Page.enable", session=session)
                # Until our page has loaded, each page event is a reason to look again.
                while await tools.evaluate(session, "[location.href, document.readyState]") != [
                    url,
                    "complete",
                ]:
                    await asyncio.wait_for(tools.events.get(), HANG_GUARD)
                yield tools, session
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
    finally:
        chromium.terminate()  # SIGTERM: chromium ends its helper processes too
        try:
            chromium.wait(10)
        except subprocess.TimeoutExpired:
            chromium.kill()
            chromium.wait(HANG_GUARD)


def timeline_workflow() -> Workflow:
    names = ["<b>first</b> & co", "gate", "last"]
    kinds = ["chatty", "gated", "chatty"]
    stages = [
        StageExecution(
            ref_id=f"s{i}",
            type=kind,
            name=names[i],
            requisite_stage_ref_ids=set() if i == 0 else {f"s{i - 1}"},
            tasks=[TaskExecution.create(f"t{i}", kind, stage_start=True, stage_end=True)],
        )
        for i, kind in enumerate(kinds)
    ]
    return Workflow.create(application="timeline", name="timeline demo", stages=stages)


STAGES_JS = """[...document.querySelectorAll('#stages tr')].map(row => [
    row.dataset.refId, row.children[1].textContent, row.querySelector('.status').textContent])"""


async def test_timeline_page_follows_a_running_workflow(
    engine: StreamEngine, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    gateway = await start_gateway(engine.events, token=TOKEN)
    wf = timeline_workflow()
    engine.orchestrator().start(wf)
    url = f"{gateway.http_url}/workflows/{wf.id}?token={TOKEN}"
    async with browser(url, tmp_path / "chromium") as (tools, page):
        # Live: the gate holds s1 while the page shows it running.
        await tools.until(
            page,
            "document.querySelector('tr[data-ref-id=\"s1\"] .status')?.textContent === 'RUNNING'",
        )
        assert await tools.evaluate(page, "document.body.dataset.workflowStatus") == ""
        engine.gate.set()
        status = await tools.until(page, "document.body.dataset.workflowStatus")
        stages = await tools.evaluate(page, STAGES_JS)
        progress = await tools.evaluate(
            page, "[...document.querySelectorAll('#progress .message')].map(m => m.textContent)"
        )
        title = await tools.evaluate(page, "document.getElementById('title').textContent")
        injected = await tools.evaluate(page, "document.querySelectorAll('#stages b').length")
        connection = await tools.evaluate(page, "document.body.dataset.connection")
    assert status == "SUCCEEDED"
    assert stages == [
        ["s0", "<b>first</b> & co", "SUCCEEDED"],
        ["s1", "gate", "SUCCEEDED"],
        ["s2", "last", "SUCCEEDED"],
    ]
    assert injected == 0  # stage names are text, never markup
    assert progress == [
        "s0 step 1/3 (step=1)",
        "s0 step 2/3 (step=2)",
        "s0 step 3/3 (step=3)",
        "waiting for the gate",
        "s2 step 1/3 (step=1)",
        "s2 step 2/3 (step=2)",
        "s2 step 3/3 (step=3)",
    ]
    assert title == "timeline demo · timeline"
    assert connection == "live"


def pictures_workflow() -> Workflow:
    """start -> b1 (gated), b2 (retried once), b3 -> quorum (2 of 3) -> check (loops) -> end."""

    def stage(ref: str, kind: str, after: set[str], **fields: Any) -> StageExecution:
        return StageExecution(
            ref_id=ref,
            type=kind,
            name=fields.pop("name", ref),
            requisite_stage_ref_ids=after,
            tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
            **fields,
        )

    return Workflow.create(
        application="pictures",
        name="pictures demo",
        stages=[
            stage("start", "step", set(), name='<img src="x" id="injected">'),
            stage("b1", "gated", {"start"}),
            stage("b2", "flaky", {"start"}),
            stage("b3", "step", {"start"}),
            stage("quorum", "step", {"b1", "b2", "b3"}, join_type="N_OF_M", join_threshold=2),
            stage("check", "loop", {"quorum"}),
            stage("end", "step", {"check"}),
        ],
    )


def pictures_registry(db: StreamEngine) -> Any:
    registry = engine_registry(db)
    runs: dict[str, int] = {}

    def once(stage: StageExecution) -> int:
        runs[stage.ref_id] = runs.get(stage.ref_id, 0) + 1
        return runs[stage.ref_id]

    def flaky(stage: StageExecution) -> TaskResult:
        if once(stage) == 1:
            raise TransientError("the first attempt fails", retry_after=0)
        return TaskResult.success()

    def loop(stage: StageExecution) -> TaskResult:
        return TaskResult.jump_to("check") if once(stage) == 1 else TaskResult.success()

    registry.register("flaky", flaky)
    registry.register("loop", loop)
    return registry


BARS_JS = """[...document.querySelectorAll('#gantt rect.bar')].map(b => [
    b.dataset.refId, b.dataset.status, Number(b.dataset.run), Number(b.dataset.retries),
    b.classList.contains('running')])"""
NODES_JS = """Object.fromEntries([...document.querySelectorAll('#graph g.node')].map(n => [
    n.dataset.refId, [n.dataset.status, n.dataset.join || '']]))"""
BAR_WIDTH_JS = (
    "Number(document.querySelector('#gantt rect.bar[data-ref-id=\"b1\"]').getAttribute('width'))"
)


async def test_timeline_page_draws_the_gantt_and_the_graph_as_a_workflow_runs(
    db: StreamEngine, start_gateway: GatewayFactory, tmp_path: Path
) -> None:
    run_engine(db, pictures_registry(db))
    gateway = await start_gateway(db.events, token=TOKEN)
    wf = pictures_workflow()
    db.orchestrator().start(wf)
    url = f"{gateway.http_url}/workflows/{wf.id}?token={TOKEN}"
    async with browser(url, tmp_path / "chromium") as (tools, page):
        # b1 waits at its gate while the rest runs: the quorum fired on b2 and b3.
        await tools.until(
            page,
            "document.querySelector('#graph g.node[data-ref-id=\"end\"]')?.dataset.status"
            " === 'SUCCEEDED'",
        )
        nodes = await tools.evaluate(page, NODES_JS)
        bars = await tools.evaluate(page, BARS_JS)
        width = await tools.evaluate(page, BAR_WIDTH_JS)
        # The running bar grows as time passes (the page redraws it; no event needed).
        grown = await tools.until(page, f"{BAR_WIDTH_JS} > {width} && {BAR_WIDTH_JS}")
        injected = await tools.evaluate(page, "document.querySelectorAll('#injected').length")
        start_title = await tools.evaluate(
            page, "document.querySelector('#graph g.node[data-ref-id=\"start\"] title').textContent"
        )
        db.gate.set()
        status = await tools.until(page, "document.body.dataset.workflowStatus")
        await tools.until(
            page,
            "document.querySelector('#graph g.node[data-ref-id=\"b1\"]')?.dataset.status"
            " === 'SUCCEEDED'",
        )
        final_nodes = await tools.evaluate(page, NODES_JS)
        final_bars = await tools.evaluate(page, BARS_JS)
        edges = await tools.evaluate(
            page,
            "[...document.querySelectorAll('#graph path.edge')]"
            ".map(e => e.dataset.from + '>' + e.dataset.to).sort()",
        )
    assert nodes == {
        "start": ["SUCCEEDED", ""],
        "b1": ["RUNNING", ""],
        "b2": ["SUCCEEDED", ""],
        "b3": ["SUCCEEDED", ""],
        "quorum": ["SUCCEEDED", "2/3"],
        "check": ["SUCCEEDED", ""],
        "end": ["SUCCEEDED", ""],
    }
    by_ref: dict[str, list[list[Any]]] = {}
    for bar in bars:
        by_ref.setdefault(bar[0], []).append(bar[1:])
    assert by_ref["b1"] == [["RUNNING", 1, 0, True]]
    assert by_ref["b2"] == [["SUCCEEDED", 1, 1, False]]  # one retry, in one run
    assert by_ref["check"] == [["REDIRECT", 1, 0, False], ["SUCCEEDED", 2, 0, False]]
    assert by_ref["quorum"] == [["SUCCEEDED", 1, 0, False]]
    assert set(by_ref) == {"start", "b1", "b2", "b3", "quorum", "check", "end"}
    assert grown > width
    assert injected == 0  # names are text, never markup
    assert start_title == '<img src="x" id="injected"> (start): SUCCEEDED'
    assert status == "SUCCEEDED"
    assert {ref: s for ref, (s, _) in final_nodes.items()} == dict.fromkeys(nodes, "SUCCEEDED")
    assert final_nodes["quorum"] == ["SUCCEEDED", "3/3"]
    assert not any(bar[4] for bar in final_bars)  # nothing runs any more
    assert edges == sorted(
        [
            "start>b1",
            "start>b2",
            "start>b3",
            "b1>quorum",
            "b2>quorum",
            "b3>quorum",
            "quorum>check",
            "check>end",
        ]
    )
