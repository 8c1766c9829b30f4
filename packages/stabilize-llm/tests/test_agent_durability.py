"""SIGKILL a worker mid-loop: the agent resumes without repeating a committed step."""

from __future__ import annotations

import collections
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from stabilize import (
    Orchestrator,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)

pytestmark = pytest.mark.chaos

WORKER = Path(__file__).with_name("agent_worker.py")
HANG_GUARD = 30.0


def script(server: Any, prompt: str, hold_turn: int | None) -> threading.Event:
    """Turns 0-2 each log one line; turn 3 answers. The first request of hold_turn is held."""
    release = threading.Event()
    held: list[int] = []

    def respond(request: Any) -> Any:
        assert request.prompt == prompt
        turn = request.turn
        answer: dict[str, Any] = (
            {"tool_calls": [("append_log", {"line": "abc"[turn]})]}
            if turn < 3
            else {"content": "logged a, b, c"}
        )
        if turn == hold_turn and not held:
            held.append(turn)
            answer["hold"] = release
        return answer

    server.responder = respond
    return release


def start_workflow(db_url: str, prompt: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    wf = Workflow.create(
        application="test",
        name="durable agent",
        stages=[
            StageExecution(
                ref_id="agent",
                type="agent",
                name="agent",
                context={"prompt": prompt},
                tasks=[TaskExecution.create("a", "agent", stage_start=True, stage_end=True)],
            )
        ],
    )
    store.store(wf)
    Orchestrator(queue, store=store).start(wf)
    return wf


def spawn(
    processes: list[subprocess.Popen[bytes]], args: list[str], out: Path
) -> subprocess.Popen[bytes]:
    with out.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), *args], stdout=sink, stderr=subprocess.STDOUT
        )
    processes.append(proc)
    return proc


def agent_state(db_url: str, wf: Workflow) -> dict[str, Any]:
    stage = SqliteWorkflowStore(db_url).retrieve(wf.id).stages[0]
    assert "_agent" not in stage.context  # the checkpoint is the task's state
    return dict(stage.tasks[0].state)


@pytest.mark.parametrize(("api", "kill_in"), [("ollama", "model call"), ("openai", "tool call")])
def test_sigkill_mid_loop_repeats_no_committed_step(
    model_server: Any,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
    api: str,
    kill_in: str,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'agent.db'}"
    log = tmp_path / "tool.log"
    log.write_text("")
    prompt = f"Log a, b and c ({tmp_path.name})."
    base = model_server.openai_url if api == "openai" else model_server.url
    release = script(model_server, prompt, hold_turn=2 if kill_in == "model call" else None)
    wf = start_workflow(db_url, prompt)
    out = tmp_path / "workers.out"

    first = spawn(
        processes, [db_url, base, api, str(log), "b" if kill_in == "tool call" else "-"], out
    )
    if kill_in == "model call":
        # The worker asks for turn 2 only after committing steps 1-4 (model, a, model, b).
        model_server.wait_for(lambda s: any(r.turn == 2 for r in s.requests))
        state = agent_state(db_url, wf)
        assert state["step"] == 4
        assert [i["status"] for i in state["invocations"]] == ["done", "done"]
    else:
        # The tool for "b" reports that it started, then blocks: steps 1-3 are committed.
        model_server.wait_for(lambda s: bool(s.hooks))
        state = agent_state(db_url, wf)
        assert state["step"] == 4
        assert [i["status"] for i in state["invocations"]] == ["done", "pending"]
    first.kill()
    first.wait(timeout=HANG_GUARD)
    release.set()

    second = spawn(processes, [db_url, base, api, str(log), "-"], out)
    assert second.wait(timeout=HANG_GUARD * 2) == 0, out.read_text()

    done = SqliteWorkflowStore(db_url).retrieve(wf.id)
    assert done.status is WorkflowStatus.SUCCEEDED, out.read_text()
    stage = done.stages[0]
    assert stage.outputs["answer"] == "logged a, b, c"
    keys = [f"{wf.id}:{stage.id}:{step}" for step in (2, 4, 6)]
    assert [
        (i["tool"], i["arguments"], i["result"], i["idempotency_key"], i["status"])
        for i in stage.outputs["tool_invocations"]
    ] == [
        ("append_log", {"line": line}, f"logged {line}", key, "done")
        for line, key in zip("abc", keys, strict=True)
    ]
    assert stage.outputs["iterations"] == 4

    # Model calls, counted at the server per (workflow, step): a committed call never
    # repeats; only the call in flight when the worker died (turn 2) was made again.
    per_turn = collections.Counter(r.turn for r in model_server.requests if r.prompt == prompt)
    expected = {0: 1, 1: 1, 2: 2 if kill_in == "model call" else 1, 3: 1}
    assert dict(per_turn) == expected

    # Tool calls, counted in the tool's own log: each effect happened once; the call
    # interrupted mid-way ran again with the same idempotency key.
    lines = log.read_text().splitlines()
    starts = collections.Counter(line for line in lines if line.startswith("start"))
    dones = [line for line in lines if line.startswith("done")]
    assert dones == [f"done {key} {line}" for line, key in zip("abc", keys, strict=True)]
    interrupted = f"start {keys[1]} b"
    assert starts == {
        f"start {keys[0]} a": 1,
        interrupted: 2 if kill_in == "tool call" else 1,
        f"start {keys[2]} c": 1,
    }
