"""SubWorkflowTask against database errors, reruns and an injected clock (found by the
simulation, seed 24 with faults in tasks; see docs/reliability.md).

The database errors are injected at the edge, as the simulation does: the processor's
backend is a thin wrapper around the real one that raises the dialect's own transient
error once, in the transaction (or read) the task itself opens. Runs on SQLite and
PostgreSQL.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import pytest

from stabilize import (
    QueueProcessor,
    StageExecution,
    SubWorkflowTask,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
    sub_workflow_config,
)
from stabilize.backends._base import Backend, Transaction
from stabilize.events import EventStore
from stabilize.queue import Queue
from stabilize.queue.processor.config import QueueProcessorConfig

if TYPE_CHECKING:
    from integration.conftest import Engine, FakeClock, MakeEngine

S = WorkflowStatus
HANG_GUARD = 30.0
"""Seconds a run may take before a test gives up (guards hangs only)."""


def database_error(real: Backend, where: str, transient: bool = True) -> Exception:
    """An error of ``real``'s dialect as its driver raises it: transient, or one that is not."""
    if real.dialect == "postgres":
        import psycopg

        if transient:
            return psycopg.errors.SerializationFailure(f"could not serialize access ({where})")
        return psycopg.errors.InsufficientPrivilege(f"permission denied ({where})")
    if transient:
        return sqlite3.OperationalError(f"database is locked ({where})")
    return sqlite3.OperationalError(f"attempt to write a readonly database ({where})")


class FailOnce(Backend):
    """The real backend behind a wrapper that fails one transaction or read of one thread.

    :meth:`arm` names the point: ``begin`` (before the transaction), ``rollback`` (before
    its commit), ``after_commit`` (committed, but the caller sees an error, as when the
    acknowledgement is lost) or ``read`` (before a read).
    """

    def __init__(self, real: Backend) -> None:
        super().__init__()
        self.dialect = real.dialect
        self.placeholder = real.placeholder
        self.real = real
        self.cache = real.cache
        self.lock = real.lock
        self.registries = real.registries
        self.point: str | None = None
        self.thread: int | None = None
        self.transient = True
        self.fired: list[str] = []

    def arm(self, point: str, transient: bool = True) -> None:
        """Fail the next transaction (or read) that the calling thread opens."""
        self.point, self.thread, self.transient = point, threading.get_ident(), transient

    def _draw(self, points: tuple[str, ...]) -> str | None:
        if self.point not in points or self.thread != threading.get_ident():
            return None
        point, self.point = self.point, None
        self.fired.append(point)
        return point

    def _error(self, where: str) -> Exception:
        return database_error(self.real, where, self.transient)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        point = self._draw(("begin", "rollback", "after_commit"))
        if point == "begin":
            raise self._error("injected before the transaction")
        with self.real.transaction() as tx:
            yield tx
            if point == "rollback":
                raise self._error("injected before the commit")
        if point == "after_commit":
            raise self._error("injected after the commit")

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        if self._draw(("read",)) is not None:
            raise self._error("injected before a read")
        with self.real.read() as tx:
            yield tx

    def own_event_store(self) -> EventStore:
        return self.real.own_event_store()

    def event_table_prefix(self) -> str | None:
        return self.real.event_table_prefix()

    def is_transient_error(self, exc: BaseException) -> bool:
        return self.real.is_transient_error(exc)

    def close(self) -> None:
        """The real backend is closed with its engine."""

    @property
    def location(self) -> str:
        return self.real.location


class FaultedSub(SubWorkflowTask):
    """A SubWorkflowTask that arms ``faulty`` once, at the submit or at the first poll."""

    def __init__(self, faulty: FailOnce, point: str, transient: bool = True) -> None:
        self.faulty = faulty
        self.point = point
        self.transient = transient
        self.armed = False

    def execute(self, stage: StageExecution) -> TaskResult:
        polling = "_sub_workflow_id" in stage.context
        if not self.armed and polling == (self.point == "read"):
            self.armed = True
            self.faulty.arm(self.point, self.transient)
        return super().execute(stage)


def child_stage(ref: str = "c1") -> StageExecution:
    return StageExecution.for_task(ref, "child")


def parent(*stages: StageExecution) -> Workflow:
    return Workflow.create("tests", "parent", list(stages))


def sub_stage(ref: str = "sub", **context: object) -> StageExecution:
    config = sub_workflow_config("child", [child_stage()])
    return StageExecution.for_task(
        ref,
        "sub",
        context={"_sub_workflow_config": config, "_sub_workflow_poll_seconds": 0.01, **context},
    )


def faulty_processor(engine: Engine, faulty: FailOnce) -> QueueProcessor:
    """A processor of ``engine``'s registry whose database is ``faulty`` (stopped at teardown)."""
    queue = Queue(faulty, lock_duration=engine.queue.lock_duration)
    processor = QueueProcessor(
        queue, QueueProcessorConfig(poll_frequency_ms=10), task_registry=engine.registry
    )
    engine.extra.append(processor)
    return processor


@pytest.mark.parametrize("point", ["begin", "rollback", "after_commit", "read"])
def test_a_transient_database_error_of_the_task_is_retried_with_one_child(
    make_engine: MakeEngine, point: str
) -> None:
    engine = make_engine()
    faulty = FailOnce(engine.backend)
    ran: list[str] = []

    def child(stage: StageExecution) -> TaskResult:
        ran.append(stage.idempotency_key)
        return TaskResult.success(outputs={"answer": 42})

    engine.registry.register("child", child)
    engine.registry.register("sub", FaultedSub(faulty, point))
    wf = parent(sub_stage())
    engine.store.store(wf)
    engine.orchestrator.start(wf)

    faulty_processor(engine, faulty).process_all(timeout=HANG_GUARD)

    assert faulty.fired == [point]
    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED, final.error
    outputs = final.stage_by_ref_id("sub").outputs
    assert outputs["sub_workflow_outputs"] == {"answer": 42}
    children = engine.query("SELECT id FROM workflows WHERE id <> ?", (wf.id,))
    assert children == [(outputs["sub_workflow_id"],)]
    assert len(ran) == 1


def test_a_retry_after_the_submit_finds_the_same_child(make_engine: MakeEngine) -> None:
    """A subclass raising TransientError after the submit: its context is lost, its retry
    count goes up, and the retry still finds the child the first attempt started."""
    engine = make_engine()
    ran: list[str] = []
    attempts: list[int] = []

    class Flaky(SubWorkflowTask):
        def execute(self, stage: StageExecution) -> TaskResult:
            result = super().execute(stage)
            attempts.append(1)
            if len(attempts) == 1:
                raise TransientError("lost after the submit", retry_after=0)
            return result

    def child(stage: StageExecution) -> TaskResult:
        ran.append(stage.execution.id)
        return TaskResult.success()

    engine.registry.register("child", child)
    engine.registry.register("sub", Flaky())
    final = engine.run(parent(sub_stage()), timeout=HANG_GUARD)

    assert final.status is S.SUCCEEDED, final.error
    assert final.stage_by_ref_id("sub").tasks[0].retry_count == 1
    assert engine.count("workflows") == 2
    assert len(ran) == 1


def test_a_database_error_that_is_not_transient_still_fails_the_task(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    faulty = FailOnce(engine.backend)
    engine.registry.register("child", lambda s: TaskResult.success())
    engine.registry.register("sub", FaultedSub(faulty, "begin", transient=False))
    wf = parent(sub_stage())
    engine.store.store(wf)
    engine.orchestrator.start(wf)

    faulty_processor(engine, faulty).process_all(timeout=HANG_GUARD)

    assert faulty.fired == ["begin"]
    final = engine.store.retrieve(wf.id)
    assert final.status is S.TERMINAL
    assert final.error is not None
    assert "task 'sub' of stage 'sub' failed" in final.error
    assert "injected before the transaction" in final.error
    assert engine.count("workflows") == 1, "no child was started"
    assert engine.count("queue_messages") == 0


def test_a_stage_run_again_by_a_jump_starts_a_new_child(make_engine: MakeEngine) -> None:
    engine = make_engine()
    ran: list[str] = []
    passes: list[int] = []

    def child(stage: StageExecution) -> TaskResult:
        ran.append(stage.execution.id)
        return TaskResult.success(outputs={"pass": len(ran)})

    def loop(stage: StageExecution) -> TaskResult:
        passes.append(1)
        return TaskResult.jump_to("sub") if len(passes) == 1 else TaskResult.success()

    engine.registry.register("child", child)
    engine.registry.register("sub", SubWorkflowTask)
    engine.registry.register("loop", loop)
    back = StageExecution.for_task("loop", "loop", requisite_stage_ref_ids={"sub"})
    final = engine.run(parent(sub_stage(), back), timeout=HANG_GUARD)

    assert final.status is S.SUCCEEDED, final.error
    assert len(ran) == 2
    assert len(set(ran)) == 2, "the second run reused the first run's child"
    outputs = final.stage_by_ref_id("sub").outputs
    assert outputs["sub_workflow_id"] == ran[1]
    assert outputs["sub_workflow_outputs"] == {"pass": 2}
    assert engine.count("workflows") == 3


def test_the_child_is_stamped_with_the_processors_clock(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    clock.now = 946_684_800.0  # 2000-01-01, long before the wall clock
    engine = make_engine(clock=clock)
    engine.registry.register("child", lambda s: TaskResult.success())
    engine.registry.register("sub", SubWorkflowTask)
    wf = parent(sub_stage(_sub_workflow_poll_seconds=0))

    final = engine.run(wf, timeout=HANG_GUARD)

    # With the wall clock, the child's first message would be due decades after the
    # processor's now: it never starts, and the parent waits.
    assert final.status is S.SUCCEEDED, final.error
    child_id = final.stage_by_ref_id("sub").outputs["sub_workflow_id"]
    [(created,)] = engine.query("SELECT created_at FROM workflows WHERE id = ?", (child_id,))
    assert created == 946_684_800_000
    assert engine.store.retrieve(child_id).start_time == 946_684_800_000
