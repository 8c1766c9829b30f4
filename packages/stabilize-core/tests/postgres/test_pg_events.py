"""Event recording on PostgreSQL: appended in the transition's own transaction."""

from __future__ import annotations

import threading

import psycopg
import pytest

from stabilize import StageExecution, TaskResult, WorkflowStatus, emit_progress
from stabilize.events import (
    Event,
    PostgresEventStore,
    SqliteEventStore,
    configure_event_sourcing,
    get_event_bus,
)

pytestmark = pytest.mark.postgres

S = WorkflowStatus
LIFECYCLE = {
    "workflow.created",
    "workflow.started",
    "stage.started",
    "task.started",
    "task.completed",
    "stage.completed",
    "workflow.completed",
}


def test_events_in_the_engine_schema_have_contiguous_sequences(
    make_pg_engine, pg_url, pg_schema, build
):
    events = PostgresEventStore(pg_url, schema=pg_schema)
    configure_event_sourcing(events)
    engine = make_pg_engine()

    def work(s: StageExecution) -> TaskResult:
        emit_progress(s, "half way", pct=50)
        return TaskResult.success(outputs={"done": s.ref_id})

    engine.registry.register("work", work)
    wf = build.workflow(build.stage("a", "work"), build.stage("b", "work", {"a"}))

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    log = events.get_events(wf.id)
    assert [e.sequence for e in log] == list(range(1, len(log) + 1))
    assert log[0].event_type == "workflow.created"
    assert log[-1].event_type == "workflow.completed"
    assert {e.event_type for e in log} >= LIFECYCLE
    progress = [e for e in log if e.event_type == "custom.progress"]
    assert [e.data["pct"] for e in progress] == [50, 50]
    assert result.event_sequence == len(log)
    assert events.get_events(wf.id, since=len(log) - 1) == log[-1:]
    assert events.get_events(wf.id, limit=2) == log[:2]
    assert events.count() == len(log)


def test_events_in_another_schema_of_the_same_database(
    make_pg_engine, pg_url, fresh_schema_name, build
):
    events = PostgresEventStore(pg_url, schema=fresh_schema_name)
    configure_event_sourcing(events)
    engine = make_pg_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = build.workflow(build.stage("a", "work"))

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    log = events.get_events(wf.id)
    assert [e.sequence for e in log] == list(range(1, len(log) + 1))
    assert log[-1].event_type == "workflow.completed"


def test_a_failed_transaction_records_no_event(make_pg_engine, pg_url, pg_schema, build):
    events = PostgresEventStore(pg_url, schema=pg_schema)
    configure_event_sourcing(events)
    engine = make_pg_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    wf = build.workflow(build.stage("a", "work"))
    engine.store.store(wf)

    other = build.workflow(build.stage("x", "work"))
    with (  # noqa: PT012 - the transaction fails on its last statement
        pytest.raises(psycopg.errors.UniqueViolation),
        engine.store.backend.transaction() as tx,
    ):
        tx.insert_workflow(other, 1)
        tx.cur.execute("INSERT INTO stages SELECT * FROM stages LIMIT 1")

    assert events.count() == 1  # the first workflow's workflow.created only


def test_a_sqlite_event_store_does_not_record_a_postgres_engine(make_pg_engine, build, tmp_path):
    sqlite_events = SqliteEventStore(f"sqlite:///{tmp_path / 'ev.db'}", create_tables=True)
    try:
        configure_event_sourcing(sqlite_events)
        engine = make_pg_engine()
        engine.registry.register("work", lambda s: TaskResult.success())

        result = engine.run(build.workflow(build.stage("a", "work")))

        assert result.status is S.SUCCEEDED
        assert sqlite_events.count() == 0
    finally:
        sqlite_events.close()


def test_committed_events_reach_the_bus(make_pg_engine, pg_url, pg_schema, build):
    configure_event_sourcing(PostgresEventStore(pg_url, schema=pg_schema))
    engine = make_pg_engine()
    engine.registry.register("work", lambda s: TaskResult.success())
    seen: list[Event] = []
    lock = threading.Lock()

    def listener(event: Event) -> None:
        with lock:
            seen.append(event)

    unsubscribe = get_event_bus().subscribe(listener)
    try:
        wf = build.workflow(build.stage("a", "work"))
        engine.run(wf)
    finally:
        unsubscribe()

    mine = [e.sequence for e in seen if e.workflow_id == wf.id]
    assert mine == list(range(1, len(mine) + 1))
    assert mine
