"""Following a running workflow: blocking, async, callbacks, progress, replay."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from stabilize.streaming import StreamItem, WorkflowStream

if TYPE_CHECKING:
    from conftest import StreamEngine


def test_follow_running_workflow_to_completion(db: StreamEngine) -> None:
    wf = db.chain("step", "step", "step")
    db.orchestrator().start(wf)
    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        db.start_processor()
        items = list(stream.follow(include_history=True, timeout=db.hang_guard))
    assert items, "nothing was streamed"
    assert items[-1].event_type == "workflow.completed", db.describe(items)
    logged = db.events.get_events(wf.id)
    assert [i.sequence for i in items] == [e.sequence for e in logged]
    assert [i.sequence for i in items] == list(range(1, len(items) + 1))
    assert all(i.source in ("replay", "live") and i.workflow_id == wf.id for i in items)
    assert stream.last_sequence == items[-1].sequence


def test_follow_without_history_starts_at_the_end(db: StreamEngine) -> None:
    wf = db.chain("step", "progress")
    db.orchestrator().start(wf)
    db.start_processor()
    db.wait_until(lambda: db.status(wf.id) == "RUNNING", "the workflow to run")
    end = len(db.events.get_events(wf.id))
    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        items = stream.follow(timeout=db.hang_guard)
        db.gate.set()
        seen = list(items)
    assert seen[-1].event_type == "workflow.completed", db.describe(seen)
    assert all(i.sequence == 0 or i.sequence > end for i in seen), db.describe(seen)


def test_on_event_calls_back_in_order(db: StreamEngine) -> None:
    wf = db.chain("step", "step")
    db.orchestrator().start(wf)
    received: list[StreamItem] = []
    threads: set[int] = set()
    lock = threading.Lock()

    def callback(item: StreamItem) -> None:
        with lock:
            received.append(item)
            threads.add(threading.get_ident())

    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        stream.on_event(callback, include_history=True)
        db.start_processor()
        db.wait_until(lambda: any(i.is_terminal for i in list(received)), "the terminal event")
    logged = db.events.get_events(wf.id)
    assert [i.sequence for i in received] == [e.sequence for e in logged]
    assert threading.get_ident() not in threads


async def test_async_iterator_follows_to_completion(db: StreamEngine) -> None:
    wf = db.chain("step", "step")
    db.orchestrator().start(wf)
    db.start_processor()
    items: list[StreamItem] = []
    with WorkflowStream(wf.id, since=0, poll_interval=0.01) as stream:
        async for item in stream:
            items.append(item)
    assert items[-1].event_type == "workflow.completed", db.describe(items)
    assert [i.sequence for i in items] == [e.sequence for e in db.events.get_events(wf.id)]


async def test_afollow_gives_up_after_inactivity(db: StreamEngine) -> None:
    wf = db.chain("progress")
    db.orchestrator().start(wf)
    with WorkflowStream(wf.id, since=0) as stream:
        items = [item async for item in stream.afollow(timeout=0.5)]
    # Nothing runs the workflow: only what the start recorded, then the timeout ends it.
    assert [i.sequence for i in items] == [e.sequence for e in db.events.get_events(wf.id)]


def test_replay_equals_the_log(db: StreamEngine) -> None:
    wf = db.chain("step", "step")
    db.orchestrator().start(wf)
    db.start_processor()
    db.wait_until(lambda: db.status(wf.id) == "SUCCEEDED", "the workflow to succeed")
    replayed = WorkflowStream(wf.id, db.events).replay()
    expected = [StreamItem.from_event(e) for e in db.events.get_events(wf.id)]
    assert replayed == expected
    assert replayed[-1].event_type == "workflow.completed"


def test_progress_reaches_follower_before_task_completes(db: StreamEngine) -> None:
    wf = db.chain("progress")
    db.orchestrator().start(wf)
    with WorkflowStream(wf.id, poll_interval=0.01) as stream:
        items = stream.follow(include_history=True, timeout=db.hang_guard)
        db.start_processor()
        before: list[StreamItem] = []
        for item in items:
            before.append(item)
            if item.event_type == "custom.progress":
                break
        progress = before[-1]
        assert progress.source == "live", db.describe(before)
        assert progress.sequence == 0
        assert progress.data["message"] == "working"
        assert progress.data["step"] == 1
        # The task is still waiting for the gate: it has not completed.
        assert "task.completed" not in [i.event_type for i in before]
        db.gate.set()
        after = list(items)
    assert after[-1].event_type == "workflow.completed", db.describe(after)
    recorded = [e for e in db.events.get_events(wf.id) if e.event_type == "custom.progress"]
    assert len(recorded) == 1, "the update is recorded with the task's result"
    # The recorded copy of an update delivered live is not delivered again.
    assert [i.event_type for i in after].count("custom.progress") == 0, db.describe(after)
