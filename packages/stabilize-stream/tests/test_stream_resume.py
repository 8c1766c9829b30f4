"""Resuming a stream from a sequence number: no gap, no duplicate."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabilize.streaming import StreamItem, WorkflowStream

if TYPE_CHECKING:
    from conftest import StreamEngine


def test_resume_after_close_has_no_gap_and_no_duplicate(db: StreamEngine) -> None:
    wf = db.chain("step", "progress", "step")
    db.orchestrator().start(wf)
    db.start_processor()
    first: list[StreamItem] = []
    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        for item in stream.follow(include_history=True, timeout=db.hang_guard):
            first.append(item)
            if item.event_type == "custom.progress":
                break  # the second stage's task is running and waits for the gate
        resume_from = stream.last_sequence
    # Committed while no stream is open: the rest of the workflow.
    db.gate.set()
    db.wait_until(lambda: db.status(wf.id) == "SUCCEEDED", "the workflow to succeed")
    logged = [e.sequence for e in db.events.get_events(wf.id)]
    assert resume_from < logged[-1]
    with WorkflowStream(wf.id, since=resume_from, poll_interval=0.01) as resumed:
        second = list(resumed.follow(timeout=db.hang_guard))
        assert resumed.last_sequence == logged[-1]
    seen = [i.sequence for i in first if i.sequence > 0] + [i.sequence for i in second]
    assert seen == logged, (db.describe(first), db.describe(second))
    assert second[-1].event_type == "workflow.completed"
    # The progress update delivered live before the disconnect is in the log too.
    assert "custom.progress" in [i.event_type for i in second]


def test_resume_from_every_sequence(db: StreamEngine) -> None:
    wf = db.chain("step", "step")
    db.orchestrator().start(wf)
    db.start_processor()
    db.wait_until(lambda: db.status(wf.id) == "SUCCEEDED", "the workflow to succeed")
    logged = [e.sequence for e in db.events.get_events(wf.id)]
    for n in range(len(logged)):
        with WorkflowStream(wf.id, since=n, batch_size=3) as stream:
            got = [i.sequence for i in stream.follow(timeout=db.hang_guard)]
        assert got == logged[n:], n
