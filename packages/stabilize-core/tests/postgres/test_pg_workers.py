"""Several processors on one schema: SKIP LOCKED claims, LISTEN/NOTIFY wake-ups."""

from __future__ import annotations

import threading

import pytest

from stabilize import QueueProcessorConfig, StageExecution, TaskResult, WorkflowStatus
from stabilize.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres

S = WorkflowStatus


def test_two_processors_in_two_threads_run_every_task_exactly_once(
    make_pg_engine, build, executions, poll
):
    engine = make_pg_engine(config=QueueProcessorConfig(poll_frequency_ms=10, max_workers=3))
    other = engine.another_processor()

    joined: dict[str, dict[str, object]] = {}

    def step(s: StageExecution) -> TaskResult:
        executions.record(s)
        if s.ref_id == "d":
            joined[s.workflow_id or ""] = dict(s.context)
        return TaskResult.success(outputs={s.ref_id: True})

    engine.registry.register("step", step)
    workflows = []
    for i in range(20):
        wf = build.workflow(
            build.stage("a", "step"),
            build.stage("b", "step", {"a"}),
            build.stage("c", "step", {"a"}),
            build.stage("d", "step", {"b", "c"}),
            name=f"drain_{i}",
        )
        engine.store.store(wf)
        workflows.append(wf)

    engine.processor.start()
    other.start()
    for wf in workflows:
        engine.orchestrator.start(wf)
    poll(lambda: executions.total() >= 80 and engine.queue.size() == 0, "80 tasks to run")
    poll(lambda: engine.store.count(status=S.SUCCEEDED) == 20, "20 workflows to succeed")

    assert set(executions.counts.values()) == {1}
    assert len(executions.counts) == 80
    assert len(set(executions.keys)) == 80
    assert joined == {wf.id: {"a": True, "b": True, "c": True} for wf in workflows}


def test_claims_skip_messages_another_worker_has_locked(make_pg_engine, build, gate, poll):
    # Each processor runs one task at a time; both tasks wait for each other, so the
    # workflows finish only if the second processor claims while the first holds a lease.
    engine = make_pg_engine(config=QueueProcessorConfig(poll_frequency_ms=10, max_workers=1))
    other = engine.another_processor()
    met = threading.Barrier(2)

    def meet(s: StageExecution) -> TaskResult:
        met.wait(timeout=20)
        return TaskResult.success()

    engine.registry.register("meet", meet)
    first = build.workflow(build.stage("a", "meet"))
    second = build.workflow(build.stage("a", "meet"))

    engine.processor.start()
    other.start()
    engine.orchestrator.start(first)
    engine.orchestrator.start(second)
    poll(lambda: engine.store.count(status=S.SUCCEEDED) == 2, "both workflows to succeed")

    assert not met.broken


def test_an_idle_processor_wakes_on_notify(make_pg_engine, build, pg_query, poll):
    # The poll interval is far longer than the hang guard: only the NOTIFY sent when the
    # workflow is started can wake the processor in time.
    engine = make_pg_engine(config=QueueProcessorConfig(poll_frequency_ms=600_000))
    ran = threading.Event()

    def mark(s: StageExecution) -> TaskResult:
        ran.set()
        return TaskResult.success()

    engine.registry.register("mark", mark)
    wf = build.workflow(build.stage("a", "mark"), build.stage("b", "mark", {"a"}))
    engine.store.store(wf)
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)

    engine.processor.start()
    # Wait until the processor sits in its LISTEN wait (its listener's last statement is
    # the next-due query, and the connection is idle).
    poll(
        lambda: (
            bool(
                pg_query(
                    "SELECT 1 FROM pg_stat_activity WHERE state = 'idle' "
                    "AND query LIKE %s AND query LIKE %s",
                    ("%GREATEST(deliver_at%", "%queue_messages%"),
                )
            )
            and bool(backend._waiters.waiting)
        ),
        "the processor to wait for notifications",
    )
    engine.orchestrator.start(wf)

    assert ran.wait(timeout=30), "the idle processor did not wake up"
    poll(lambda: engine.store.retrieve(wf.id).status is S.SUCCEEDED, "the workflow to succeed")
    # stop() interrupts the long wait too.
    assert engine.processor.stop(wait=True, timeout=30) == 0
    assert not engine.processor.is_running


def test_each_schema_has_its_own_notify_channel(make_pg_engine, pg_url, fresh_schema_name):
    engine = make_pg_engine()
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)
    other = PostgresBackend.for_url(pg_url, fresh_schema_name)

    assert other.channel != backend.channel


def test_a_wait_begun_after_a_stop_request_returns_at_once(make_pg_engine):
    # A stop requested while the processor was between its loop check and its wait found
    # no waiter to wake; the wait must see the request itself (or stop() hangs a poll).
    engine = make_pg_engine()
    stop = threading.Event()
    stop.set()
    waiter = threading.Thread(target=engine.store.backend.wait_for_work, args=(600.0, stop))
    waiter.start()
    waiter.join(timeout=30)
    assert not waiter.is_alive()
