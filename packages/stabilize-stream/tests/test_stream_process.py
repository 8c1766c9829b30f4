"""A stream in this process sees the events of a worker in another process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stabilize.streaming import WorkflowStream

if TYPE_CHECKING:
    from conftest import StreamEngine

WORKER = Path(__file__).with_name("stream_worker.py")


def test_stream_sees_events_of_another_process(
    db: StreamEngine, spawn: list[subprocess.Popen[str]]
) -> None:
    wf = db.chain("step", "step", "step")
    db.orchestrator().start(wf)  # nothing in this process runs it
    args = [sys.executable, str(WORKER), db.kind, db.url]
    if db.schema is not None:
        args.append(db.schema)
    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        items = stream.follow(include_history=True, timeout=db.hang_guard)
        first = next(items)
        assert first.event_type == "workflow.created"
        spawn.append(
            subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
        rest = list(items)
    streamed = [first, *rest]
    assert streamed[-1].event_type == "workflow.completed", db.describe(streamed)
    assert [i.sequence for i in streamed] == [e.sequence for e in db.events.get_events(wf.id)]
    outputs = [i.data for i in streamed if i.event_type == "task.completed"]
    assert outputs, db.describe(streamed)
    out, err = spawn[0].communicate(timeout=db.hang_guard)
    assert spawn[0].returncode == 0, err
    assert "done" in out
