"""close() hands consumers everything committed before it, and StreamItem.source (issue 14).

The README's pattern is: subscribe with ``on_event``, run the workflow with
``process_all``, close the stream. Every event committed before ``close()`` must reach the
callback, progress updates included, however the stream's background thread was timed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stabilize import QueueProcessor, StageExecution, TaskResult, WorkflowStream
from stabilize.events import configure_event_sourcing, emit_progress
from stabilize.streaming import StreamItem

if TYPE_CHECKING:
    from conftest import StreamEngine


def report(stage: StageExecution) -> TaskResult:
    emit_progress(stage, "halfway", pct=50)
    return TaskResult.success()


def test_close_delivers_the_tail_even_when_nothing_woke_the_stream(db: StreamEngine) -> None:
    # No in-process wake-ups and a poll interval no test reaches: before the fix the
    # stream read the (empty) log once, slept, and close() dropped the whole run.
    configure_event_sourcing(db.events, publish_to_bus=False)
    wf = db.chain("step", "report")
    db.store.store(wf)
    seen: list[StreamItem] = []
    before = [e.sequence for e in db.events.get_events(wf.id)]
    stream = WorkflowStream(wf.id, db.events, poll_interval=3600)
    stream.on_event(seen.append)  # from the end of the log: after workflow.created
    registry = db.registry()
    registry.register("report", report)
    processor = QueueProcessor(db.queue, store=db.store, task_registry=registry)
    db.orchestrator().start(wf)
    processor.process_all(timeout=db.hang_guard)
    stream.close()
    logged = [e for e in db.events.get_events(wf.id) if e.sequence > before[-1]]
    # Each recorded event once, in order; the progress update once (live or recorded:
    # emit_progress still reaches in-process listeners at once).
    assert [i.sequence for i in seen if i.sequence > 0] in (
        [e.sequence for e in logged if e.event_type != "custom.progress"],
        [e.sequence for e in logged],
    ), db.describe(seen)
    assert seen[-1].event_type == "workflow.completed"
    progress = [i for i in seen if i.event_type == "custom.progress"]
    assert [p.data["pct"] for p in progress] == [50]
    assert {i.source for i in seen} == {"live"}


def test_the_readme_pattern_sees_every_event_and_progress_update(db: StreamEngine) -> None:
    wf = db.chain("step", "report", "step")
    db.store.store(wf)
    seen: list[StreamItem] = []
    before = [e.sequence for e in db.events.get_events(wf.id)]
    stream = WorkflowStream(wf.id)
    stream.on_event(seen.append)
    registry = db.registry()
    registry.register("report", report)
    processor = QueueProcessor(db.queue, store=db.store, task_registry=registry)
    db.orchestrator().start(wf)
    processor.process_all(timeout=db.hang_guard)
    stream.close()
    logged = [e for e in db.events.get_events(wf.id) if e.sequence > before[-1]]
    recorded = [i.sequence for i in seen if i.sequence > 0]
    # Each recorded event once, in order; the progress update once (live or recorded).
    assert recorded in (
        [e.sequence for e in logged if e.event_type != "custom.progress"],
        [e.sequence for e in logged],
    ), db.describe(seen)
    assert seen[-1].event_type == "workflow.completed", str(db.describe(seen))
    assert [i.data["message"] for i in seen if i.event_type == "custom.progress"] == ["halfway"]


def test_source_is_replay_for_history_and_live_for_what_follows(db: StreamEngine) -> None:
    first = db.chain("step")
    db.store.store(first)
    db.orchestrator().start(first)
    QueueProcessor(db.queue, store=db.store, task_registry=db.registry()).process_all(
        timeout=db.hang_guard
    )
    history = [e.sequence for e in db.events.get_events(first.id)]
    with WorkflowStream(first.id, db.events) as stream:
        assert {i.source for i in stream.replay()} == {"replay"}
        seen = list(stream.follow(include_history=True, timeout=db.hang_guard))
    assert [i.sequence for i in seen] == history
    assert {i.source for i in seen} == {"replay"}
