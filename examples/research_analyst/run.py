"""Run the research analyst once: in this process, or (``chaos``) in worker processes one
of which is killed with SIGKILL in the middle of a researcher's tool call."""

from __future__ import annotations

import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from examples._chaos import kill_at_marker
from examples.research_analyst.flow import build, register
from examples.research_analyst.ledger import Ledger, Verdict, committed_calls, verify
from examples.research_analyst.model import make_tools
from examples.research_analyst.worker import CONFIG, client_for

from stabilize import Workflow, WorkflowEngine, WorkflowStatus
from stabilize.hitl import approve
from stabilize.llm import LLMClient
from stabilize.streaming import StreamItem, WorkflowStream

QUESTION = "How will heat pumps change household energy use in Europe by 2030?"
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Outcome:
    """What a run produced."""

    workflow: Workflow
    report: Path
    approve_command: str
    verdict: Verdict | None = None


def progress_printer(out: Callable[[str], None]) -> Callable[[StreamItem], None]:
    """Live progress: one line per stage change and per agent step."""
    names: dict[str, str] = {}

    def show(item: StreamItem) -> None:
        data = item.data or {}
        ref = data.get("ref_id") or names.get(item.entity_id, "")
        if ref:
            names[item.entity_id] = ref
        kind = item.event_type
        if kind.startswith("stage.") and kind != "stage.expanded":
            out(f"  {kind.removeprefix('stage.'):<10} {ref}")
        elif kind == "custom.progress":
            out(f"  {'':<10} {ref} · {data.get('message', '')}")
        elif kind.startswith("workflow."):
            out(f"  workflow {kind.removeprefix('workflow.')}")

    return show


def main(
    db_url: str,
    client: LLMClient | None = None,
    *,
    workdir: Path | None = None,
    question: str = QUESTION,
    chaos: bool = False,
    auto_approve: bool = True,
    model: str | None = None,
    base_url: str | None = None,
    api: str = "openai",
    out: Callable[[str], None] = print,
    timeout: float = 120.0,
) -> Outcome:
    """Run the analyst on ``db_url`` and return the finished workflow.

    Args:
        db_url: The database (``sqlite:///analyst.db``).
        client: The model client for an in-process run (default: the scripted model, or
            ``model`` at ``base_url``); a chaos run's workers build their own from
            ``model``, ``base_url`` and ``api``.
        workdir: Where the ledger, the chaos marker and the report go (default: a new
            temporary directory).
        question: What to research.
        chaos: Run in worker processes and SIGKILL the first one in a tool call.
        auto_approve: Approve the human gate automatically once it waits; False waits
            for ``stabilize approve`` from another shell.
        out: Where progress lines go.
        timeout: The longest the run may take (``auto_approve=False``: an hour).
    """
    workdir = workdir or Path(tempfile.mkdtemp(prefix="research-analyst-"))
    workdir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(workdir / "ledger.jsonl")
    report = workdir / "report.md"
    workflow = build(question, report)
    if client is None:
        client = client_for(workdir, model, base_url, api)
    with WorkflowEngine(db_url, config=CONFIG) as engine:
        # Registered here in a chaos run too: starting a workflow checks its task types.
        register(engine, client, make_tools(ledger))
        engine.start(workflow)
        command = f"stabilize approve {workflow.id} approve --db-url {shlex.quote(db_url)}"
        out(f"workflow {workflow.id} started on {db_url}")
        out(f"  watch it: stabilize monitor --db-url {db_url}")
        verdict: Verdict | None = None
        with WorkflowStream(workflow.id) as stream:
            stream.on_event(progress_printer(out), include_history=True)
            if chaos:
                worker, killed = _kill_first_worker(
                    db_url, workdir, workflow.id, model, base_url, api, out
                )
                committed = committed_calls(engine.retrieve(workflow.id).stages)
                out(
                    f"worker {killed} killed with SIGKILL during a tool call; starting a new worker"
                )
                worker = _spawn(db_url, workdir, workflow.id, model, base_url, api)
            else:
                engine.processor.start()
            limit = timeout if auto_approve else 3600.0
            result = _drive(engine, workflow.id, command, auto_approve, out, limit)
            if chaos:
                worker.wait(timeout=60)
                verdict = verify(ledger, committed, killed)
                for line in verdict.lines():
                    out(line)
        out(f"workflow {result.status.value}; report: {report}")
        return Outcome(result, report, command, verdict)


def _drive(
    engine: WorkflowEngine,
    workflow_id: str,
    command: str,
    auto_approve: bool,
    out: Callable[[str], None],
    timeout: float,
) -> Workflow:
    """Wait for the workflow to end, answering its approval gate on the way."""
    asked = False
    deadline = time.monotonic() + timeout
    while True:
        current = engine.retrieve(workflow_id)
        if current.status.is_complete:
            return current
        gate = current.stage_by_ref_id("approve")
        if gate.status is WorkflowStatus.SUSPENDED and not asked:
            asked = True
            out(f"approval needed; a human would run:\n    {command}")
            if auto_approve:
                approve(engine.queue, workflow_id, gate.id, {"note": "offline run"}, user="example")
                out("  approved automatically (pass --wait-for-human to decide yourself)")
        if time.monotonic() > deadline:
            raise TimeoutError(f"workflow {workflow_id} is still {current.status.value}")
        time.sleep(0.05)


def _spawn(
    db_url: str,
    workdir: Path,
    workflow_id: str,
    model: str | None,
    base_url: str | None,
    api: str,
    *extra: str,
) -> subprocess.Popen[bytes]:
    argv = [
        sys.executable,
        "-m",
        "examples.research_analyst.worker",
        db_url,
        str(workdir),
        workflow_id,
    ]
    if model:
        argv += ["--model", model, "--api", api] + (["--base-url", base_url] if base_url else [])
    return subprocess.Popen([*argv, *extra], cwd=REPO)


def _kill_first_worker(
    db_url: str,
    workdir: Path,
    workflow_id: str,
    model: str | None,
    base_url: str | None,
    api: str,
    out: Callable[[str], None],
) -> tuple[subprocess.Popen[bytes], int]:
    worker = _spawn(db_url, workdir, workflow_id, model, base_url, api, "--hang")
    out(f"worker {worker.pid} started; it will be killed inside its first web_search")
    return worker, kill_at_marker(worker, workdir / "tool-started")
