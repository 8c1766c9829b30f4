"""The agent team under SIGKILL: a worker process is killed in the middle of the coder's
tool call, a new one finishes the run, and the ledger shows that no committed model or
tool call ran twice."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from examples._chaos import Ledger, Verdict, committed_calls, kill_at_marker, verify
from examples.agent_team.team import build, client_for, make_tools, register
from examples.agent_team.worker import CONFIG

from stabilize import Workflow, WorkflowEngine, WorkflowStatus
from stabilize.hitl import approve

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ChaosOutcome:
    """What a chaos run produced."""

    workflow: Workflow
    verdict: Verdict
    killed_pid: int
    project: Path


def run_chaos(
    db_url: str,
    workdir: Path,
    *,
    model: str | None = None,
    base_url: str | None = None,
    api: str = "openai",
    out: Callable[[str], None] = print,
    timeout: float = 120.0,
) -> ChaosOutcome:
    """Run the team in worker processes, killing the first one in the coder's tool call.

    Args:
        db_url: The database (``sqlite:///agent_team.db``).
        workdir: Where the project (``project/``), the ledger (``ledger.jsonl``) and the
            marker of the hanging call (``tool-started``) go.
        model: A real model (default: the scripted one); ``base_url`` and ``api`` as in
            :func:`examples.agent_team.team.client_for`.
        out: Where progress lines go.
        timeout: The longest the run may take after the kill.
    """
    project = workdir / "project"
    project.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(workdir / "ledger.jsonl")
    workflow = build(project)
    spawn = _spawner(db_url, project, workflow.id, ledger, model, base_url, api)
    with WorkflowEngine(db_url, config=CONFIG) as engine:
        # Registered here too: starting a workflow checks its task types.
        register(engine, client_for(model, base_url, api), make_tools(project))
        engine.start(workflow)
        out(f"workflow {workflow.id} started on {db_url}")
        first = spawn("--hang", str(workdir / "tool-started"))
        out(f"worker {first.pid} started; it will be killed inside the coder's write_file")
        killed = kill_at_marker(first, workdir / "tool-started")
        committed = committed_calls(engine.retrieve(workflow.id).stages)
        out(f"worker {killed} killed with SIGKILL during a tool call; starting a new worker")
        second = spawn()
        try:
            result = _drive(engine, workflow.id, second, out, timeout)
        finally:
            if second.poll() is None:
                second.wait(timeout=60)
    verdict = verify(ledger, committed, killed)
    for line in verdict.lines():
        out(line)
    out(f"workflow {result.status.value}")
    return ChaosOutcome(result, verdict, killed, project)


def _spawner(
    db_url: str,
    project: Path,
    workflow_id: str,
    ledger: Ledger,
    model: str | None,
    base_url: str | None,
    api: str,
) -> Callable[..., subprocess.Popen[bytes]]:
    argv = [sys.executable, "-m", "examples.agent_team.worker", db_url, str(project)]
    argv += [workflow_id, "--ledger", str(ledger.path)]
    if model:
        argv += ["--model", model, "--api", api] + (["--base-url", base_url] if base_url else [])

    def spawn(*extra: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen([*argv, *extra], cwd=REPO)

    return spawn


def _drive(
    engine: WorkflowEngine,
    workflow_id: str,
    worker: subprocess.Popen[bytes],
    out: Callable[[str], None],
    timeout: float,
) -> Workflow:
    """Wait for the workflow to end, approving the release once the gate waits."""
    approved = False
    deadline = time.monotonic() + timeout
    while True:
        current = engine.retrieve(workflow_id)
        if current.status.is_complete:
            return current
        gate = current.stage_by_ref_id("approve")
        if gate.status is WorkflowStatus.SUSPENDED and not approved:
            approved = True
            approve(engine.queue, workflow_id, gate.id, {"note": "chaos run"}, user="example")
            out("release approved")
        if worker.poll() is not None:
            raise RuntimeError(f"worker {worker.pid} exited ({worker.returncode}) mid-run")
        if time.monotonic() > deadline:
            worker.kill()
            raise TimeoutError(f"workflow {workflow_id} is still {current.status.value}")
        time.sleep(0.05)
