"""Event sourcing: transitions recorded in the engine's transaction, and the live bus.

On SQLite events go to the engine's file or to another file (attached); on PostgreSQL to the
engine's schema or to another schema of the same database.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow, emit_progress
from stabilize.engine.messages import Effects
from stabilize.errors import EventStoreError
from stabilize.events import (
    Event,
    EventStore,
    SqliteEventStore,
    configure_event_sourcing,
    current_event_store,
    default_event_store,
    disable_event_sourcing,
    get_event_bus,
    open_event_store,
    recording_enabled,
)
from stabilize.models.event import EventType
from stabilize.queue.processor.config import QueueProcessorConfig

HANG_GUARD = 30.0

if TYPE_CHECKING:
    from conftest import Database, Databases

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


@pytest.fixture(params=["same-database", "separate-database"])
def event_db(request: pytest.FixtureRequest, backend: Database, databases: Databases) -> Database:
    """Where events go: the engine's own file/schema, or another file/schema."""
    return backend if request.param == "same-database" else databases.new("events")


@pytest.fixture
def recording(event_db: Database) -> Iterator[EventStore]:
    """Event recording on, into ``event_db`` (a SqliteEventStore or a PostgresEventStore)."""
    store = event_db.event_store()
    configure_event_sourcing(store)
    yield store
    configure_event_sourcing()
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
    make_engine: Any, recording: EventStore
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


def test_separate_database_keeps_the_engine_database_free_of_events(make_engine, databases):
    other = databases.new("only-events")
    store = other.event_store()
    configure_event_sourcing(store)
    try:
        engine = make_engine()
        engine.registry.register("work", lambda s: TaskResult.success())
        wf = two_stages()
        engine.run(wf)
        recorded = store.get_events(wf.id)
        stored = store.count()
    finally:
        configure_event_sourcing()
        store.close()

    assert recorded
    assert stored == len(recorded)
    assert engine.count("events") == 0  # every database has the table (recording's default)


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


def test_recording_is_on_by_default_into_the_engine_database(make_engine, backend):
    engine = make_engine()
    assert current_event_store() is None
    assert recording_enabled()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()

    engine.run(wf)

    log = default_event_store(wf.id)
    assert log is not None
    types = [e.event_type for e in log.get_events(wf.id)]
    assert types[0] == "workflow.created"
    assert types[-1] == "workflow.completed"
    assert [e.sequence for e in log.get_events(wf.id)] == list(range(1, len(types) + 1))
    assert engine.db.event_store().get_events(wf.id) == log.get_events(wf.id)


def test_no_event_rows_when_recording_is_off(make_engine, listen):
    engine = make_engine()
    disable_event_sourcing()
    assert not recording_enabled()
    wf = two_stages()
    received = listen(wf.id)

    def work(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "tick")
        return TaskResult.success()

    engine.registry.register("work", work)

    result = engine.run(wf)

    assert result.status.value == "SUCCEEDED"
    assert engine.count("events") == 0
    assert [e.data["message"] for e in received if e.event_type == "custom.progress"] == [
        "tick",
        "tick",
    ]
    assert "workflow.completed" in {e.event_type for e in received}


def test_reading_from_any_sequence_unpacks_transition_rows(make_engine, backend):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    engine.run(wf)
    log = backend.event_store()
    everything = log.get_events(wf.id)
    assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))
    # Several events per transition share one row; every cut point still reads exactly.
    assert engine.count("events") < len(everything) == log.count()
    for since in range(len(everything) + 1):
        assert log.get_events(wf.id, since) == everything[since:]
        assert log.get_events(wf.id, since, limit=2) == everything[since : since + 2]
    assert log.get_events("no such workflow") == []


def test_recent_heads_names_the_workflows_that_changed(make_engine, backend):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    first, second = two_stages(), two_stages()
    second.application = "other"
    started = int(time.time() * 1000)
    engine.run(first)
    engine.run(second)
    log = backend.event_store()
    last = {wf.id: log.get_events(wf.id)[-1].sequence for wf in (first, second)}

    assert log.recent_heads(started) == last
    assert log.recent_heads(started, application="other") == {second.id: last[second.id]}
    assert log.recent_heads(started, application="nobody") == {}
    assert log.recent_heads(int(time.time() * 1000) + 60_000) == {}


def test_open_event_store_reads_the_log_of_a_url(make_engine, backend):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    engine.run(wf)
    log = open_event_store(backend.url, schema=backend.schema)
    assert log.get_events(wf.id) == backend.event_store().get_events(wf.id)
    if not backend.is_postgres:
        with pytest.raises(ValueError, match="PostgreSQL"):
            open_event_store(backend.url, schema="s")


def test_a_separate_sqlite_log_cannot_filter_by_application(tmp_path):
    log = SqliteEventStore(f"sqlite:///{tmp_path / 'only-events.db'}")
    with pytest.raises(EventStoreError, match="application"):
        log.recent_heads(0, application="a")
    log.close()


def one_stage() -> Workflow:
    return Workflow.create(
        application="tests",
        name="progress",
        stages=[
            StageExecution(
                ref_id="a", type="work", name="a", tasks=[TaskExecution.create("a", "work")]
            )
        ],
    )


def test_progress_of_a_running_task_is_recorded_in_batches(make_engine, backend, gate, poll):
    engine = make_engine(config=QueueProcessorConfig(progress_flush_interval_seconds=0.01))
    wf = one_stage()
    emitted = threading.Event()

    def work(stage: StageExecution) -> TaskResult:
        for n in range(50):
            emit_progress(stage, "token", n=n)
        emitted.set()
        gate.wait(HANG_GUARD)
        emit_progress(stage, "after the gate")
        return TaskResult.success()

    engine.registry.register("work", work)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    log = backend.event_store()

    def recorded_tokens() -> list[int]:
        return [
            e.data["n"]
            for e in log.get_events(wf.id)
            if e.event_type == "custom.progress" and "n" in e.data
        ]

    # While the task still runs (blocked on the gate), its updates reach the log.
    assert emitted.wait(HANG_GUARD)
    poll(lambda: recorded_tokens() == list(range(50)), "the 50 updates to be recorded")
    assert engine.store.retrieve(wf.id).status.value == "RUNNING"
    # Batched: the 50 updates took a few commits (rows of the log), not one each.
    assert engine.count("events") < 20
    gate.set()
    poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")

    events = log.get_events(wf.id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    progress = [e.data["message"] for e in events if e.event_type == "custom.progress"]
    assert progress == ["token"] * 50 + ["after the gate"]  # each once, in order
    types = [e.event_type for e in events]
    assert types.index("task.completed") > types.index("custom.progress")


def test_progress_flush_interval_zero_records_updates_with_the_result(make_engine, backend):
    engine = make_engine(config=QueueProcessorConfig(progress_flush_interval_seconds=0))
    wf = one_stage()

    def work(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "one")
        emit_progress(stage, "two")
        return TaskResult.success()

    engine.registry.register("work", work)
    engine.run(wf)
    events = backend.event_store().get_events(wf.id)
    messages = [e.data["message"] for e in events if e.event_type == "custom.progress"]
    assert messages == ["one", "two"]


def test_negative_progress_flush_interval_is_refused():
    with pytest.raises(ValueError, match="progress_flush_interval_seconds"):
        QueueProcessorConfig(progress_flush_interval_seconds=-1)


def test_publish_to_bus_false_records_without_telling_listeners(make_engine, backend, listen):
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    configure_event_sourcing(publish_to_bus=False)
    wf = two_stages()
    received = listen(wf.id)
    engine.run(wf)
    assert received == []
    assert backend.event_store().get_events(wf.id)[-1].event_type == "workflow.completed"


def test_progress_of_an_execution_whose_lease_was_taken_is_not_recorded(
    make_engine, backend, gate, poll
):
    engine = make_engine(config=QueueProcessorConfig(progress_flush_interval_seconds=0.01))
    wf = one_stage()
    first_recorded, emitted = threading.Event(), threading.Event()

    def work(stage: StageExecution) -> TaskResult:
        emit_progress(stage, "before")
        first_recorded.wait(HANG_GUARD)
        emit_progress(stage, "after the lease was lost")
        emitted.set()
        gate.wait(HANG_GUARD)
        return TaskResult.success()

    engine.registry.register("work", work)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    log = backend.event_store()

    def recorded() -> list[str]:
        return [
            e.data["message"] for e in log.get_events(wf.id) if e.event_type == "custom.progress"
        ]

    poll(lambda: recorded() == ["before"], "the first update to be recorded")
    with engine.backend.transaction() as tx:  # another worker adopts the task's message
        tx.cur.execute(
            "UPDATE queue_messages SET lease_owner = 'thief', lease_token = lease_token + 1"
        )
    first_recorded.set()
    assert emitted.wait(HANG_GUARD)
    commits = engine.processor.commits
    # Two more flush transactions: at least one began after the update was emitted.
    poll(lambda: engine.processor.commits >= commits + 2, "two more progress flushes")
    assert recorded() == ["before"]


def stored_two_stages(make_engine: Any) -> tuple[Any, Workflow, int]:
    """An engine, a two-stage workflow stored (not started) and the log's row count then."""
    engine = make_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = two_stages()
    engine.store.store(wf)
    return engine, wf, engine.count("events")


def test_transitions_of_one_workflow_in_one_transaction_share_one_row(make_engine, backend, listen):
    engine, wf, rows_before = stored_two_stages(make_engine)
    received = listen()
    stage_a = wf.stages[0]
    with engine.store.backend.transaction() as tx:
        loaded = tx.workflow(wf.id)
        assert loaded is not None
        for n in range(3):
            fx = Effects()
            fx.emit(EventType.CONTEXT_UPDATED, "stage", stage_a.id, n=n)
            tx.save(loaded, fx, 1_000 + n)  # three transitions, three clock readings
        other = two_stages()
        tx.insert_workflow(other, 5_000)

    log = backend.event_store()
    notes = [e for e in log.get_events(wf.id) if e.event_type == "context.updated"]
    assert [e.data["n"] for e in notes] == [0, 1, 2]
    assert [e.sequence for e in notes] == [2, 3, 4]
    # One row for the three transitions of wf, one for the other workflow's creation.
    assert engine.count("events") == rows_before + 2
    # The events of one workflow in one transaction carry the first transition's time,
    # read back from the log and as delivered live alike.
    assert {e.timestamp for e in notes} == {1_000}
    live = [e for e in received if e.event_type == "context.updated"]
    assert [(e.sequence, e.timestamp) for e in live] == [(e.sequence, 1_000) for e in notes]
    assert [e.event_type for e in log.get_events(other.id)] == ["workflow.created"]
    assert log.get_events(wf.id, since=2) == log.get_events(wf.id)[2:]


def test_a_value_that_is_not_json_fails_its_transition_and_records_nothing(make_engine, backend):
    engine, wf, rows_before = stored_two_stages(make_engine)
    fx = Effects()
    fx.emit(EventType.CONTEXT_UPDATED, "stage", wf.stages[0].id, value=object())

    def transition() -> None:
        with engine.store.backend.transaction() as tx:
            loaded = tx.workflow(wf.id)
            assert loaded is not None
            tx.save(loaded, fx, 1_000)

    with pytest.raises(TypeError):
        transition()
    assert engine.count("events") == rows_before
    assert engine.store.retrieve(wf.id).event_sequence == 1
