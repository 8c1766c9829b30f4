"""Code written for the original package runs unchanged (issue 14).

Two kinds of programs run here, each in a subprocess of its own, with a fresh working
directory and every distribution of the workspace installed:

* every ```python block of the seed README (the contract), as written. The README's
  fragments (blocks that use a name they do not define, or elide arguments with ``...``)
  get the minimal completion listed in ``COMPLETIONS``; nothing else changes in them but
  the model endpoint (``https://ollama.com`` becomes a local fake server, as the PostgreSQL
  URL would be substituted in a block that named one);
* ``USER_PROGRAMS``: the programs of issue 14 that behaved differently from the original
  (a quick approver, a deferred choice of ordinary tasks, a sub-workflow built inside
  ``execute``, the README's streaming pattern, ``{stdout}`` of a ShellTask, an echoed
  Authorization header, a provider answering 503), on SQLite and on PostgreSQL.

The fake model server speaks the OpenAI chat-completions and the Ollama ``/api/chat``
shapes on 127.0.0.1 and answers deterministically: with tools offered and no tool result
in the conversation yet it calls the first tool, otherwise it answers in text; the model
``always-503`` gets HTTP 503. The environment points the client at it the way the
original's client reads it (``OLLAMA_HOST``, ``OPENAI_BASE_URL``, ``OLLAMA_API_KEY``,
``OPENAI_API_KEY``).

The README is read from ``<repo>/../shared/spec/``; without it the README tests skip.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
SEED = ROOT.parent / "shared" / "spec" / "000_119adcbbeb515096.txt"
PG_URL_ENV = "STABILIZE_TEST_PG_URL"
CLOUD_URL = "https://ollama.com"
API_KEY = "compat-test-key"
RUN_TIMEOUT = 50.0  # seconds: guards hangs only (the per-test guard is 60 s)
FAILING_MODEL = "always-503"


def readme_blocks() -> list[str]:
    """The ```python blocks of the seed README, in order ([] when it is absent)."""
    if not SEED.is_file():
        return []
    return re.findall(r"^```python\n(.*?)^```", SEED.read_text(encoding="utf-8"), re.S | re.M)


BLOCKS = readme_blocks()


# -- how each fragment of the README is completed ------------------------------------------


@dataclass(frozen=True)
class Completion:
    """The minimal completion of a README fragment, and why it needs one."""

    why: str
    build: Callable[[list[str]], str]
    expect: str = ""  # a line the program prints when it ran as the README says


def _insert_after(text: str, anchor: str, insert: str) -> str:
    assert anchor in text, f"the README block no longer holds {anchor!r}"
    return text.replace(anchor, anchor + insert, 1)


def _agent_with_approval(blocks: list[str]) -> str:
    return "def lookup_balance(user_id):\n    return '$42.00'\n\n\n" + blocks[1]


def _agent_streamed(blocks: list[str]) -> str:
    # Block 2 subscribes to the workflow of block 1: it runs inside that program, right
    # after the workflow is stored, and the stream is closed when the program ends.
    program = _insert_after(_agent_with_approval(blocks), "store.store(workflow)\n", blocks[2])
    return program + textwrap.dedent(
        """
        stream.close()
        print("stream closed")
        """
    )


def _stage_expression(i: int) -> Callable[[list[str]], str]:
    # `tasks=[...]` is valid Python (a list holding Ellipsis): evaluated as written.
    return lambda blocks: "from stabilize import JoinType, StageExecution\n\n" + blocks[i]


def _router(blocks: list[str]) -> str:
    return (
        "from stabilize import StageExecution, Task, TaskResult, WorkflowStatus\n\n"
        "def passes_remaining(stage):\n    return True\n\n\n"
        + blocks[5]
        + textwrap.dedent(
            """
            result = Router().execute(StageExecution(ref_id="router", context={"confidence": 0.5}))
            assert result.status == WorkflowStatus.REDIRECT
            assert result.target_stage_ref_id == "plan"
            assert result.context == {"feedback": "tighten the numbers"}
            print("router jumps to plan")
            """
        )
    )


def _recovery(blocks: list[str]) -> str:
    setup = textwrap.dedent(
        """
        from stabilize import QueueProcessor, SqliteQueue, SqliteWorkflowStore, TaskRegistry

        store = SqliteWorkflowStore("sqlite:///recovery.db", create_tables=True)
        queue = SqliteQueue("sqlite:///recovery.db")
        queue._create_table()
        registry = TaskRegistry()
        """
    )
    return setup + blocks[6] + "\nprocessor.stop()\nprint('recovered and stopped')\n"


def _builtin_tasks(blocks: list[str]) -> str:
    return "from stabilize import TaskRegistry\n\nregistry = TaskRegistry()\n\n" + blocks[7]


def _general_workflow(blocks: list[str]) -> str:
    # `name="Setup", ...)` elides the tasks; Python cannot parse `...` after keywords.
    body = re.sub(r",\s*\.\.\.\)", ")", blocks[8])
    return "from stabilize import StageExecution, Workflow\n\n" + body + "\nprint('graph ok')\n"


def _transient(blocks: list[str]) -> str:
    return (
        "from stabilize import TransientError\n\ndone = 0\ntry:\n"
        + textwrap.indent(blocks[9], "    ")
        + textwrap.dedent(
            """
            except TransientError as exc:
                assert exc.retry_after == 30
                assert exc.context_update == {"processed_items": 10}
                print("transient error raised")
            """
        )
    )


COMPLETIONS: dict[int, Completion] = {
    1: Completion(
        "`lookup_balance` is the user's own function: a stub returning '$42.00' is defined",
        _agent_with_approval,
    ),
    2: Completion(
        "subscribes to `workflow`, which block 1 defines: inserted into block 1's program "
        "after `store.store(workflow)`, with `stream.close()` at the end",
        _agent_streamed,
        expect="workflow.completed",
    ),
    3: Completion("imports `JoinType` and `StageExecution`", _stage_expression(3)),
    4: Completion("imports `JoinType` and `StageExecution`", _stage_expression(4)),
    5: Completion(
        "imports `Task`, `TaskResult`; `passes_remaining` is the user's; the router is run",
        _router,
        expect="router jumps to plan",
    ),
    6: Completion(
        "needs `queue`, `store`, `registry` (a SQLite file); the processor is stopped",
        _recovery,
        expect="recovered and stopped",
    ),
    7: Completion("needs `registry`", _builtin_tasks),
    8: Completion(
        "imports `Workflow`, `StageExecution`; the elided `...` arguments are dropped",
        _general_workflow,
        expect="graph ok",
    ),
    9: Completion(
        "runs inside `except TransientError`, with `done = 0`, and checks the error",
        _transient,
        expect="transient error raised",
    ),
}
"""Blocks (by index among the README's ```python blocks) that are fragments."""

VERBATIM_EXPECT = {0: "", 10: ""}
"""Blocks that run as written (but for the model endpoint), with a line they print."""


def program_of(index: int, blocks: list[str], model_url: str) -> tuple[str, str]:
    """The program that runs README block ``index``, and a line it must print."""
    completion = COMPLETIONS.get(index)
    if completion is None:
        source, expect = blocks[index], VERBATIM_EXPECT[index]
    else:
        source, expect = completion.build(blocks), completion.expect
    return source.replace(CLOUD_URL, model_url), expect


# -- the fake model server -------------------------------------------------------------------


class _ModelHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if body.get("model") == FAILING_MODEL:
            self._send(503, {"error": "model overloaded, try later"})
            return
        name, arguments, text = _decide(body)
        if self.path.rstrip("/").endswith("/api/chat"):
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if name is not None:
                message["tool_calls"] = [{"function": {"name": name, "arguments": arguments}}]
            self._send(
                200,
                {
                    "model": body.get("model"),
                    "message": message,
                    "done": True,
                    "prompt_eval_count": 11,
                    "eval_count": 7,
                },
            )
        elif self.path.rstrip("/").endswith("/chat/completions"):
            message = {"role": "assistant", "content": text}
            if name is not None:
                call = {"name": name, "arguments": json.dumps(arguments)}
                message["tool_calls"] = [{"id": "call_1", "type": "function", "function": call}]
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
            self._send(200, {"id": "chatcmpl-1", "choices": [choice], "usage": usage})
        else:
            self._send(404, {"error": f"no route {self.path}"})

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _decide(body: dict[str, Any]) -> tuple[str | None, dict[str, Any], str]:
    """(tool to call or None, its arguments, text): deterministic in the conversation."""
    messages = body.get("messages") or []
    results = [m.get("content") for m in messages if m.get("role") == "tool"]
    tools = body.get("tools") or []
    if tools and not results:
        function = tools[0]["function"]
        names = function.get("parameters", {}).get("properties", {})
        return function["name"], {p: "u_42" for p in names}, ""
    if results:
        return None, {}, f"The tool said: {results[-1]}"
    prompt = next((m.get("content") for m in reversed(messages) if m["role"] == "user"), "")
    return None, {}, f"A short answer to: {prompt}"


@pytest.fixture(scope="module")
def model_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ModelHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def run_program(
    source: str, cwd: Path, model_url: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "OLLAMA_API_KEY": API_KEY,
        "OPENAI_API_KEY": API_KEY,
        "OLLAMA_HOST": model_url,
        "OPENAI_BASE_URL": f"{model_url}/v1",
        **(extra_env or {}),
    }
    script = cwd / "program.py"
    script.write_text(source, encoding="utf-8")
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


# -- the README's blocks -------------------------------------------------------------------


def test_the_suite_knows_every_block_of_the_readme() -> None:
    if not BLOCKS:
        pytest.skip(f"the seed README is not at {SEED} (a copy of shared/ beside the clone)")
    # A block added to or removed from the README must be classified here.
    assert len(BLOCKS) == len(COMPLETIONS) + len(VERBATIM_EXPECT)
    assert set(COMPLETIONS) | set(VERBATIM_EXPECT) == set(range(len(BLOCKS)))
    for index in VERBATIM_EXPECT:
        assert "..." not in BLOCKS[index].replace("# ...", ""), f"block {index} is a fragment"


@pytest.mark.parametrize("index", range(len(COMPLETIONS) + len(VERBATIM_EXPECT)))
def test_readme_block_runs(index: int, tmp_path: Path, model_url: str) -> None:
    if not BLOCKS:
        pytest.skip(f"the seed README is not at {SEED} (a copy of shared/ beside the clone)")
    source, expect = program_of(index, BLOCKS, model_url)
    done = run_program(source, tmp_path, model_url)
    assert done.returncode == 0, f"block {index} failed:\n{source}\n---\n{done.stderr[-3000:]}"
    assert expect in done.stdout, done.stdout[-3000:]
    if index == 0:
        assert done.stdout.strip() == (
            "A short answer to: In one sentence, what is a token bucket rate limiter?"
        )
    if index == 2:
        # The README's pattern (subscribe, process_all, close) sees the whole run: the
        # agent's progress and the end of the workflow, which comes last.
        lines = done.stdout.splitlines()
        assert "custom.progress model call 1" in lines, lines
        assert lines[-2].startswith("workflow.completed"), lines


# -- the user programs of issue 14, on SQLite and PostgreSQL ---------------------------------

PRELUDE = """
import os

from stabilize import PostgresQueue, PostgresWorkflowStore, SqliteQueue, SqliteWorkflowStore

URL = os.environ["COMPAT_DB_URL"]
SCHEMA = os.environ.get("COMPAT_DB_SCHEMA") or None


def open_db():
    if URL.startswith("sqlite"):
        store = SqliteWorkflowStore(URL, create_tables=True)
        queue = SqliteQueue(URL)
        queue._create_table()
    else:
        store = PostgresWorkflowStore(URL, schema=SCHEMA)
        queue = PostgresQueue(URL, schema=SCHEMA)
    return store, queue


def open_events():
    from stabilize.events import PostgresEventStore, SqliteEventStore

    if URL.startswith("sqlite"):
        return SqliteEventStore(URL)
    return PostgresEventStore(URL, schema=SCHEMA)


def one_task(ref, kind, after=(), **fields):
    from stabilize import StageExecution, TaskExecution

    return StageExecution(
        ref_id=ref, type=kind, name=ref, requisite_stage_ref_ids=set(after),
        tasks=[TaskExecution.create(name=ref, implementing_class=kind,
                                    stage_start=True, stage_end=True)],
        **fields,
    )
"""

USER_PROGRAMS: dict[str, str] = {
    "approve_before_the_gate_waits": """
from stabilize import (
    ApprovalTask, Orchestrator, QueueProcessor, TaskRegistry, TaskResult, Workflow,
    WorkflowStatus, approve,
)

store, queue = open_db()
workflow = Workflow.create(application="demo", name="quick approver", stages=[
    one_task("agent", "agent"),
    one_task("approve", "approval", after={"agent"}),
])
gate_id = workflow.stages[1].id


def agent(stage):
    # The person approves while the agent still runs: the gate has not started.
    approve(queue, workflow.id, gate_id, {"user": "alice"})
    return TaskResult.success(outputs={"balance": 42})


registry = TaskRegistry()
registry.register("agent", agent)
registry.register("approval", ApprovalTask)
processor = QueueProcessor(queue, store=store, task_registry=registry)
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
processor.process_all(timeout=30)
result = store.retrieve(workflow.id)
assert result.status == WorkflowStatus.SUCCEEDED, result.status
assert result.stages[1].outputs["approved"] is True
assert result.stages[1].outputs["approval"] == {"user": "alice"}
print("OK")
""",
    "deferred_choice_of_ordinary_tasks": """
import threading

from stabilize import (
    JoinType, Orchestrator, QueueProcessor, TaskRegistry, TaskResult, Workflow, WorkflowStatus,
)

store, queue = open_db()
ran = []
lock = threading.Lock()


def strategy(stage):
    with lock:
        ran.append(stage.ref_id)
    return TaskResult.success(outputs={"winner": stage.ref_id})


registry = TaskRegistry()
registry.register("strategy", strategy)
registry.register(
    "use", lambda stage: TaskResult.success(outputs={"used": stage.context["winner"]})
)
workflow = Workflow.create(application="demo", name="race", stages=[
    one_task("cheap", "strategy", deferred_choice_group="pick"),
    one_task("thorough", "strategy", deferred_choice_group="pick"),
    one_task("use", "use", after={"cheap", "thorough"}, join_type=JoinType.OR),
])
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
result = store.retrieve(workflow.id)
assert result.status == WorkflowStatus.SUCCEEDED, result.status
assert len(ran) == 1, ran
assert result.stage_by_ref_id("use").outputs["used"] == ran[0]
print("OK")
""",
    "sub_workflow_built_in_execute": """
from stabilize import (
    Orchestrator, QueueProcessor, StageExecution, SubWorkflowTask, TaskExecution, TaskRegistry,
    TaskResult, Workflow, WorkflowStatus,
)


class WriteReport(SubWorkflowTask):
    def execute(self, stage):
        if "_sub_workflow_config" not in stage.context:
            stage.context["_sub_workflow_config"] = {
                "name": "report",
                "application": "demo",
                "stages": [
                    StageExecution(
                        ref_id="draft", type="draft", name="Draft",
                        context={"topic": stage.context["topic"]},
                        tasks=[TaskExecution.create(name="draft", implementing_class="draft",
                                                    stage_start=True, stage_end=True)],
                    ),
                ],
                "context": {},
            }
        return super().execute(stage)


store, queue = open_db()
registry = TaskRegistry()
registry.register("report", WriteReport)
registry.register(
    "draft", lambda s: TaskResult.success(outputs={"report": "on " + s.context["topic"]})
)
registry.register("publish", lambda s: TaskResult.success(
    outputs={"published": s.context["sub_workflow_outputs"]["report"]}))
workflow = Workflow.create(application="demo", name="parent", stages=[
    one_task("report", "report", context={"topic": "Q3", "_sub_workflow_poll_seconds": 0.05}),
    one_task("publish", "publish", after={"report"}),
])
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
result = store.retrieve(workflow.id)
assert result.status == WorkflowStatus.SUCCEEDED, result.error
assert result.stage_by_ref_id("report").outputs["sub_workflow_outputs"] == {"report": "on Q3"}
assert result.stage_by_ref_id("publish").outputs["published"] == "on Q3"
print("OK")
""",
    "stream_and_replay": """
from stabilize import (
    Orchestrator, QueueProcessor, TaskRegistry, TaskResult, Workflow, WorkflowStatus,
    WorkflowStream,
)
from stabilize.events import EventReplayer
from stabilize.streaming import emit_progress


def work(stage):
    emit_progress(stage, "halfway", pct=50)
    return TaskResult.success(outputs={"done": True})


store, queue = open_db()
registry = TaskRegistry()
registry.register("work", work)
workflow = Workflow.create(application="demo", name="streamed", stages=[
    one_task("a", "work"), one_task("b", "work", after={"a"}),
])
store.store(workflow)
seen = []
stream = WorkflowStream(workflow.id)
stream.on_event(lambda item: seen.append(item))
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
stream.close()
assert seen[-1].event_type == "workflow.completed", [i.event_type for i in seen]
assert [i.data["message"] for i in seen if i.event_type == "custom.progress"] == ["halfway"] * 2
assert {i.source for i in seen} == {"live"}
assert {i.source for i in stream.replay()} == {"replay"}
state = EventReplayer(open_events()).rebuild_workflow_state(workflow.id)
assert state["status"] == "SUCCEEDED"
assert {s["status"] for s in state["stages"].values()} == {"SUCCEEDED"}
print("OK")
""",
    "shell_stdout_placeholder": """
from stabilize import (
    Orchestrator, QueueProcessor, ShellTask, TaskRegistry, Workflow, WorkflowStatus,
)

store, queue = open_db()
registry = TaskRegistry()
registry.register("shell", ShellTask)
workflow = Workflow.create(application="ci", name="build", stages=[
    one_task("build", "shell", context={"command": "echo build-42"}),
    one_task("report", "shell", after={"build"}, context={"command": "echo got:{stdout}"}),
])
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
result = store.retrieve(workflow.id)
assert result.status == WorkflowStatus.SUCCEEDED, result.error
assert result.stage_by_ref_id("build").outputs["stdout"] == "build-42"
assert result.stage_by_ref_id("report").outputs["stdout"] == "got:build-42"
print("OK")
""",
    "http_echoed_authorization": """
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from stabilize import Orchestrator, QueueProcessor, TaskRegistry, Workflow, WorkflowStatus
from stabilize.tasks.http import HTTPTask


class Echo(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        data = json.dumps({"authorization": self.headers.get("Authorization")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
threading.Thread(target=server.serve_forever, daemon=True).start()
store, queue = open_db()
registry = TaskRegistry()
registry.register("http", HTTPTask(allow_private_urls=True))  # the echo server is local
url = "http://127.0.0.1:%d/whoami" % server.server_address[1]
workflow = Workflow.create(application="demo", name="echo", stages=[
    one_task("call", "http", context={"url": url, "bearer_token": "tok-123", "parse_json": True}),
])
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
result = store.retrieve(workflow.id)
server.shutdown()
assert result.status == WorkflowStatus.SUCCEEDED, result.error
assert result.stages[0].outputs["body_json"] == {"authorization": "Bearer tok-123"}
print("OK")
""",
    "llm_provider_answering_503": f'''
from stabilize import Orchestrator, QueueProcessor, TaskRegistry, Workflow, WorkflowStatus
from stabilize.llm import LLMClient, LLMTask

store, queue = open_db()
registry = TaskRegistry()
registry.register("llm", LLMTask(client=LLMClient(model="{FAILING_MODEL}", api="ollama")))
workflow = Workflow.create(application="demo", name="down", stages=[
    one_task("answer", "llm", context={{"prompt": "hi", "llm_retry_timeout_seconds": 1}}),
])
store.store(workflow)
Orchestrator(queue, store=store).start(workflow)
QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
result = store.retrieve(workflow.id)
assert result.status == WorkflowStatus.TERMINAL, result.status
assert "HTTP 503: model overloaded, try later" in result.error, result.error
print("OK")
''',
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment that points a user program at a fresh SQLite file or PG schema."""
    if request.param == "sqlite":
        yield {"COMPAT_DB_URL": f"sqlite:///{tmp_path / 'compat.db'}"}
        return
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
    import psycopg
    from psycopg import sql
    from ulid import ULID

    schema = f"t_{str(ULID()).lower()}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield {"COMPAT_DB_URL": url, "COMPAT_DB_SCHEMA": schema}
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize("name", sorted(USER_PROGRAMS))
def test_user_program_behaves_as_with_the_original(
    name: str, database: dict[str, str], tmp_path: Path, model_url: str
) -> None:
    source = PRELUDE + USER_PROGRAMS[name]
    done = run_program(source, tmp_path, model_url, database)
    assert done.returncode == 0, f"{name} failed:\n{done.stderr[-3000:]}"
    assert done.stdout.strip().splitlines()[-1] == "OK"
