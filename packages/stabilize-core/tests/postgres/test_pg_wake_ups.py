"""Idle workers woken by a NOTIFY: only one that reserved a message goes on to claim.

Every idle worker receives every notification; a wake-up that finds nothing to claim must
cost no transaction (issue 19), and no wake-up may be lost. The processors here poll every
ten minutes, far longer than the hang guard: only the wake-up mechanism can move work.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from stabilize import (
    QueueProcessorConfig,
    StageExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends._base import Transaction
from stabilize.backends.postgres import PostgresBackend

pytestmark = pytest.mark.postgres

S = WorkflowStatus
IDLE_POLL = QueueProcessorConfig(poll_frequency_ms=600_000)


class ProcessorTransactions:
    """Counts the write transactions opened by processor threads, per thread."""

    def __init__(self, backend: PostgresBackend) -> None:
        self.by_thread: Counter[int] = Counter()
        self._lock = threading.Lock()
        transaction = backend.transaction

        @contextmanager
        def counted() -> Iterator[Transaction]:
            thread = threading.current_thread()
            if thread.name == "stabilize-processor":
                with self._lock:
                    self.by_thread[thread.ident or 0] += 1
            with transaction() as tx:
                yield tx

        backend.transaction = counted  # type: ignore[method-assign]

    def total(self) -> int:
        with self._lock:
            return sum(self.by_thread.values())

    def threads(self) -> set[int]:
        with self._lock:
            return set(self.by_thread)


def _listening(backend: PostgresBackend, pg_query: Any, count: int) -> bool:
    """True when ``count`` waits of ``backend`` sit idle after a reservation attempt."""
    with backend._waiters._lock:
        pids = [listener.conn.info.backend_pid for listener in backend._waiters.waiting]
    rows = pg_query(
        "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND state = 'idle' "
        "AND query LIKE %s",
        (pids, "%reserved%"),
    )
    return int(rows[0][0]) >= count


@pytest.fixture
def other_backend(pg_url: str, pg_schema: str) -> Iterator[PostgresBackend]:
    """A second backend on the test's schema, as another worker process would open.

    A different URL (same server and database) makes :meth:`PostgresBackend.for_url` open
    a backend of its own, with its own wake-up owner.
    """
    sep = "&" if "?" in pg_url else "?"
    backend = PostgresBackend.for_url(f"{pg_url}{sep}application_name=other_worker", pg_schema)
    yield backend
    backend.close()


def _one_stage(build: Any, task: str = "mark") -> Workflow:
    wf: Workflow = build.workflow(build.stage("a", task))
    return wf


def _started_one(make_pg_engine: Any, build: Any, executions: Any) -> tuple[Any, Workflow]:
    """An engine that polls rarely, with one stored and started one-stage workflow."""
    engine = make_pg_engine(config=IDLE_POLL)
    engine.registry.register("mark", _mark(executions))
    wf = _one_stage(build)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    return engine, wf


def _mark(executions: Any) -> Callable[[StageExecution], TaskResult]:
    def mark(s: StageExecution) -> TaskResult:
        executions.record(s)
        return TaskResult.success()

    return mark


def test_a_notification_that_brings_nothing_opens_no_transaction(make_pg_engine, pg_query, poll):
    engine = make_pg_engine(config=IDLE_POLL)
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)
    engine.processor.start()
    poll(lambda: _listening(backend, pg_query, 1), "the processor to wait for notifications")
    counted = ProcessorTransactions(backend)
    waiters = backend._waiters
    empty_before = waiters.empty_wake_ups

    for notified in range(1, 4):
        pg_query("SELECT pg_notify(%s, '')", (backend.channel,))
        poll(
            lambda n=notified: waiters.empty_wake_ups >= empty_before + n,
            "the waiter to look and find nothing",
        )

    assert counted.total() == 0
    assert waiters.reservations == 0
    assert engine.processor.is_running
    assert engine.processor.stop(wait=True, timeout=30) == 0


def test_one_new_message_is_claimed_by_one_of_several_idle_processors(
    make_pg_engine, build, pg_query, poll, executions
):
    engine = make_pg_engine(config=IDLE_POLL)
    engine.registry.register("mark", _mark(executions))
    processors = [engine.processor, engine.another_processor(), engine.another_processor()]
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)
    for processor in processors:
        processor.start()
    poll(lambda: _listening(backend, pg_query, 3), "three processors to wait for notifications")
    counted = ProcessorTransactions(backend)

    wf = _one_stage(build)
    engine.store.store(wf)
    engine.orchestrator.start(wf)  # one NOTIFY, received by all three

    poll(lambda: engine.store.retrieve(wf.id).status is S.SUCCEEDED, "the workflow to succeed")
    poll(lambda: _listening(backend, pg_query, 3), "the three processors to be idle again")
    assert executions.total() == 1
    # Only the processor that reserved the message opened transactions; the two others
    # looked (one statement each) and went on waiting.
    assert len(counted.threads()) == 1
    assert backend._waiters.reservations == 1


def test_work_enqueued_while_every_processor_is_busy_is_picked_up(
    make_pg_engine, build, gate, poll, executions
):
    busy = QueueProcessorConfig(poll_frequency_ms=600_000, max_workers=1)
    engine = make_pg_engine(config=busy)

    def hold(s: StageExecution) -> TaskResult:
        executions.record(s)
        gate.wait(30)
        return TaskResult.success()

    engine.registry.register("hold", hold)
    engine.registry.register("mark", _mark(executions))
    other = engine.another_processor()
    engine.processor.start()
    other.start()
    held = [_one_stage(build, "hold") for _ in range(2)]
    for wf in held:
        engine.store.store(wf)
        engine.orchestrator.start(wf)
    poll(lambda: executions.total() == 2, "both processors to be busy")

    # Its NOTIFY reaches no waiter: both processors run a task.
    late = _one_stage(build)
    engine.store.store(late)
    engine.orchestrator.start(late)
    gate.set()

    for wf in [*held, late]:
        poll(lambda wf=wf: engine.store.retrieve(wf.id).status is S.SUCCEEDED, "all to succeed")
    assert executions.total() == 3


def test_a_wait_reserves_a_claimable_message_that_only_its_process_can_claim(
    make_pg_engine, build, other_backend, pg_query, executions
):
    engine, wf = _started_one(make_pg_engine, build, executions)
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)

    backend.wait_for_work(600.0)  # returns at once: a message is claimable

    [(owner, token)] = pg_query("SELECT lease_owner, lease_token FROM queue_messages")
    assert owner == backend.wake_owner
    assert owner.startswith("~wake:")
    now = int(time.time() * 1000)
    with other_backend.transaction() as tx:
        assert tx.claim("other:1:worker", now, now + 60_000, 10) == []
    with backend.transaction() as tx:
        [claimed] = tx.claim("this:1:worker", now, now + 60_000, 10)
    assert claimed.workflow_id == wf.id
    assert claimed.lease_token == token + 1
    assert claimed.attempts == 1  # the reservation is no delivery
    assert pg_query("SELECT lease_owner FROM queue_messages") == [("this:1:worker",)]


def test_a_reservation_nobody_claims_is_taken_by_another_worker_when_it_expires(
    make_pg_engine, build, other_backend, pg_query, poll, executions
):
    # The reserving "process" never claims (as if it stopped right after its wait); the
    # other worker, polling every ten minutes, must wake when the reservation expires.
    engine, wf = _started_one(make_pg_engine, build, executions)
    other_backend.wait_for_work(600.0)
    assert pg_query("SELECT lease_owner FROM queue_messages") == [(other_backend.wake_owner,)]

    engine.processor.start()

    poll(lambda: engine.store.retrieve(wf.id).status is S.SUCCEEDED, "the workflow to succeed")
    assert executions.total() == 1


def test_a_closing_backend_gives_its_reservations_back(
    make_pg_engine, build, other_backend, pg_query, executions
):
    _started_one(make_pg_engine, build, executions)
    other_backend.wait_for_work(600.0)
    assert pg_query("SELECT lease_owner FROM queue_messages") == [(other_backend.wake_owner,)]

    other_backend.close()

    assert pg_query("SELECT lease_owner, lease_until FROM queue_messages") == [(None, None)]


def test_a_wait_never_reserves_a_leased_message(make_pg_engine, build, pg_query, executions):
    # Whether a lease ended is for the claimer to judge, by its own (maybe injected) clock:
    # a lease that ended by the wall clock is left as it is.
    engine, _ = _started_one(make_pg_engine, build, executions)
    backend = engine.store.backend
    assert isinstance(backend, PostgresBackend)
    pg_query("UPDATE queue_messages SET lease_owner = 'otherhost:1:x', lease_until = 1")

    backend.wait_for_work(0.2)

    assert pg_query("SELECT lease_owner, lease_until FROM queue_messages") == [("otherhost:1:x", 1)]
    assert backend._waiters.reservations == 0
