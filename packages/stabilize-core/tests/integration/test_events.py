"""Event sourcing: transitions recorded in the engine's transaction, and the live bus."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow, emit_progress
from stabilize.events import (
    Event,
    SqliteEventStore,
    configure_event_sourcing,
    current_event_store,
    disable_event_sourcing,
    get_event_bus,
)

LIFECYCLE = {
    "workflow.created",
    "workflow.started",
    "stage.started",
    "task.started",
    "task.completed",
    "stage.completed",
    "workflow.completed",
}


def two_stages() -> Workflow:
    return Workflow.create(
        application="tests",
        name="events",
        stages=[
            StageExecution(
                ref_id="a",
                type="work",
                name="a",
                tasks=[TaskExecution.create("a", "work")],
            ),
            StageExecution(
                ref_id="b",
                type="work",
                name="b",
                requisite_stage_ref_ids={"a"},
                tasks=[TaskExecution.create("b", "work")],
            ),
        ],
    )


@pytest.fixture(params=["same-file", "separate-file"])
def event_url(request: pytest.FixtureRequest, db_url: str, tmp_path: Any) -> str:
    return db_url if request.param == "same-file" else f"sqlite:///{tmp_path / 'events.db'}"


@pytest.fixture
def recording(event_url: str) -> Iterator[SqliteEventStore]:
    store = SqliteEventStore(event_url, create_tables=True)
    configure_event_sourcing(store)
    yield store
    disable_event_sourcing()
    store.close()


@pytest.fixture
def listen() -> Iterator[Any]:
    """``listen(workflow_id)`` subscribes a list to the bus; unsubscribed at teardown."""
    undo: list[Any] = []

    def subscribe(workflow_id: str | None = None) -> list[Event]:
        got: list[Event] = []
        lock = threading.Lock()

        def on_event(event: Event) -> None:
            with lock:
                got.append(event)

        undo.append(get_event_bus().subscribe(on_event, workflow_id))
        return got

    yield subscribe
    for unsubscribe in undo:
        unsubscribe()


def test_transitions_are_recorded_with_contiguous_sequences(
    make_engine: Any, recording: SqliteEventStore
) -> None:
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success(outputs={s.ref_id: 1}))
    assert current_event_store() is recording
    wf = two_stages()

    result = engine.run(wf)

    events = recording.get_events(wf.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert events[0].event_type == "workflow.created"
    assert events[-1].event_type == "workflow.completed"
    types = [e.event_type for e in events]
    assert set(types) >= LIFECYCLE
    assert types.count("stage.started") == 2
    assert types.count("task.completed") == 2
    assert result.event_sequence == len(events)
    assert all(e.workflow_id == wf.id for e in events)
    started = [e.entity_id for e in events if e.event_type == "stage.started"]
    assert started == [s.id for s in wf.stages]
    # since= pages through the log
    assert recording.get_events(wf.id, since=3) == events[3:]
    assert recording.get_events(wf.id, since=1, limit=2) == events[1:3]


def test_separate_file_keeps_the_engine_file_free_of_events(make_engine, db_url, tmp_path):
    events_path = tmp_path / "only-events.db"
    store = SqliteEventStore(f"sqlite:///{events_path}", create_tables=True)
    configure_event_sourcing(store)
    try:
        engine = make_engine()
        engine.registry.register("work", lambda s: TaskResult.success())
        wf = two_stages()
        engine.run(wf)
        recorded = store.get_events(wf.id)
    finally:
        disable_event_sourcing()
        store.close()

    assert recorded
    tables = {r[0] for r in engine.query("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "events" not in tables
    with contextlib.closing(sqlite3.connect(events_path)) as conn:
        count = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    assert count == len(recorded)


def test_failure_events_are_recorded(make_engine, recording):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.terminal("broken"))
    wf = two_stages()

    engine.run(wf)

    types = [e.event_type for e in recording.get_events(wf.id)]
    assert "task.failed" in types
    assert "stage.failed" in types
    assert types[-1] == "workflow.failed"


def test_progress_reaches_subscribers_live_and_is_recorded(make_engine, recording, listen):
    engine = make_engine()
    wf = two_stages()
    received = listen(wf.id)
    seen_live: list[bool] = []

    def work(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "halfway", pct=50)
        # delivered synchronously, before this task's result is committed
        seen_live.append(
            any(
                e.event_type == "custom.progress" and e.data["ref_id"] == stage.ref_id
                for e in received
            )
        )
        return TaskResult.success()

    engine.registry.register("work", work)

    engine.run(wf)

    assert seen_live == [True, True]
    progress = [e for e in received if e.event_type == "custom.progress"]
    assert [e.data["message"] for e in progress] == ["halfway", "halfway"]
    assert progress[0].data["pct"] == 50
    lifecycle = {e.event_type for e in received} - {"custom.progress"}
    assert lifecycle >= LIFECYCLE

    events = recording.get_events(wf.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    recorded = [e for e in events if e.event_type == "custom.progress"]
    assert len(recorded) == 2
    assert recorded[0].data["message"] == "halfway"
    assert recorded[0].data["pct"] == 50
    assert recorded[0].entity_id == wf.stages[0].id
    types = [e.event_type for e in events]
    first = types.index("custom.progress")
    assert types.index("task.started") < first < types.index("task.completed")


def test_bus_delivers_committed_events_in_sequence(make_engine, recording, listen):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    received = listen(wf.id)
    others = listen("another-workflow")

    engine.run(wf)

    assert others == []
    lifecycle = [e for e in received if e.event_type != "custom.progress"]
    assert [e.sequence for e in lifecycle] == [e.sequence for e in recording.get_events(wf.id)]


def test_no_event_rows_when_recording_is_off(make_engine, listen):
    engine = make_engine()
    assert current_event_store() is None
    wf = two_stages()
    received = listen(wf.id)

    def work(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "tick")
        return TaskResult.success()

    engine.registry.register("work", work)

    result = engine.run(wf)

    assert result.status.value == "SUCCEEDED"
    tables = {r[0] for r in engine.query("SELECT name FROM sqlite_master WHERE type='table'")}
    if "events" in tables:
        assert engine.count("events") == 0
    assert [e.data["message"] for e in received if e.event_type == "custom.progress"] == [
        "tick",
        "tick",
    ]
    assert "workflow.completed" in {e.event_type for e in received}
