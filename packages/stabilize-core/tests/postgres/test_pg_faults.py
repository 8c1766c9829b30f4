"""Faults: the server drops the engine's connections while workers run."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from stabilize import (
    PostgresWorkflowStore,
    QueueProcessorConfig,
    StageExecution,
    TaskResult,
    WorkflowStatus,
)
from stabilize.backends.postgres import PoolOptions

pytestmark = pytest.mark.postgres


def test_workers_carry_on_when_their_connections_are_killed(
    pg_url, pg_schema, make_pg_engine, build, executions, pg_query, poll
):
    app = f"stab_{pg_schema}"[:60]
    # Open the schema's backend first, so that the engine's store and queue use its pool,
    # whose connections carry an application_name the test can find them by.
    first = PostgresWorkflowStore(
        pg_url,
        schema=pg_schema,
        options=PoolOptions(min_size=2, max_size=4, connect_kwargs={"application_name": app}),
    )
    config = QueueProcessorConfig(
        poll_frequency_ms=10, max_workers=4, stop_on_error=True, retry_delay=timedelta(0)
    )
    engine = make_pg_engine(config=config, lock_duration=timedelta(seconds=3))
    assert engine.store.backend is first.backend
    permits = threading.Semaphore(0)

    def step(s: StageExecution) -> TaskResult:
        # One task finishes per round of the test, between two rounds of killing.
        assert permits.acquire(timeout=20), "the test stopped handing out permits"
        executions.record(s)
        return TaskResult.success(outputs={s.ref_id: 1})

    engine.registry.register("step", step)
    workflows = [build.chain("step", 4, name=f"fault_{i}") for i in range(10)]
    for wf in workflows:
        engine.orchestrator.start(wf)

    def succeeded() -> int:
        rows = pg_query("SELECT count(*) FROM workflows WHERE status = 'SUCCEEDED'")
        return int(rows[0][0])

    def kill() -> int:
        rows = pg_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (app,),
        )
        return sum(1 for (ok,) in rows if ok)

    engine.processor.start()
    killed = 0
    while succeeded() < len(workflows):
        # Drop every connection of the engine, then let one more task finish.
        seen = executions.total()
        killed += kill()
        permits.release()
        poll(
            lambda seen=seen: executions.total() > seen or succeeded() == len(workflows),
            "the next task to run",
        )
        assert engine.processor.is_running, "the processor stopped on a database error"
    for _ in range(8):  # no task may still wait for a permit
        permits.release()

    assert killed > 0
    assert set(executions.counts.values()) == {1}
    assert len(executions.counts) == 40
    # Read through a connection of the test's own: the engine's pool may still hold
    # connections the last round killed (its next transaction would find and drop them).
    statuses = dict(pg_query("SELECT id, status FROM workflows"))
    assert statuses == {wf.id: WorkflowStatus.SUCCEEDED.value for wf in workflows}
    assert pg_query("SELECT count(*) FROM queue_messages") == [(0,)]
