"""The orchestrator steering running workflows: cancel, pause and resume, start."""

from __future__ import annotations

import copy
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from stabilize import (
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowNotFoundError,
    WorkflowStatus,
)
from stabilize.engine.messages import START_WORKFLOW

S = WorkflowStatus
HANG = 30.0


def stage(ref: str, task: str, requires: Iterable[str] = ()) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(ref, task)],
    )


def then(effect: Callable[[StageExecution], object], result: TaskResult | None = None) -> Any:
    """A task function that runs ``effect`` and returns ``result`` (default: success)."""

    def run(s: StageExecution) -> TaskResult:
        effect(s)
        return result if result is not None else TaskResult.success()

    return run


def by_ref(wf: Workflow) -> dict[str, StageExecution]:
    return {s.ref_id: s for s in wf.stages}


def chain(*refs: str) -> Workflow:
    stages = [stage(refs[0], refs[0])]
    stages += [stage(r, r, {refs[i]}) for i, r in enumerate(refs[1:])]
    return Workflow.create(application="tests", name="chain", stages=stages)


def test_cancel_while_a_task_is_blocked(make_engine, gate, poll):
    engine = make_engine()
    runs: Counter[str] = Counter()
    started = threading.Event()

    def blocked(s: StageExecution) -> TaskResult:
        runs["a"] += 1
        started.set()
        gate.wait(HANG)
        return TaskResult.success(outputs={"late": True})

    engine.registry.register("a", blocked)

    def count(ref: str) -> Any:
        return then(lambda s: runs.update([ref]), TaskResult.success(outputs={ref: 1}))

    for ref in ("b", "c"):
        engine.registry.register(ref, count(ref))
    wf = chain("a", "b", "c")
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    try:
        assert started.wait(HANG), "task a never started"
        engine.orchestrator.cancel(wf.id, user="alice", reason="changed my mind")
        assert engine.store.retrieve(wf.id).status is S.CANCELED
        gate.set()
        poll(lambda: engine.processor.active_count == 0, "the blocked task to come back")
    finally:
        gate.set()
        assert engine.processor.stop(timeout=HANG) == 0

    result = engine.store.retrieve(wf.id)
    stages = by_ref(result)
    assert result.status is S.CANCELED
    assert result.is_canceled
    assert result.canceled_by == "alice"
    assert result.cancellation_reason == "changed my mind"
    assert stages["a"].status is S.CANCELED
    assert stages["a"].tasks[0].status is S.CANCELED
    assert stages["a"].outputs == {}  # the late result was discarded
    assert stages["b"].status is S.NOT_STARTED
    assert stages["c"].status is S.NOT_STARTED
    assert runs == {"a": 1}
    assert engine.queue.size() == 0


def test_cancel_unknown_workflow_raises(make_engine):
    engine = make_engine()

    with pytest.raises(WorkflowNotFoundError):
        engine.orchestrator.cancel("no-such-id")


def test_cancel_of_a_finished_workflow_changes_nothing(make_engine):
    engine = make_engine()
    engine.registry.register("a", lambda s: TaskResult.success())
    done = engine.run(chain("a"))

    engine.orchestrator.cancel(done.id, user="bob")

    after = engine.store.retrieve(done.id)
    assert after.status is S.SUCCEEDED
    assert not after.is_canceled


def test_pause_before_the_second_stage_then_resume(make_engine, gate):
    engine = make_engine()
    runs: Counter[str] = Counter()
    started = threading.Event()

    def first(s: StageExecution) -> TaskResult:
        runs["a"] += 1
        started.set()
        gate.wait(HANG)
        return TaskResult.success(outputs={"a": 1})

    engine.registry.register("a", first)
    engine.registry.register("b", then(lambda s: runs.update(["b"])))
    wf = chain("a", "b")
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    processed: list[int] = []
    runner = threading.Thread(
        target=lambda: processed.append(engine.processor.process_all(timeout=HANG))
    )
    runner.start()
    try:
        assert started.wait(HANG), "task a never started"
        engine.orchestrator.pause(wf.id)
    finally:
        gate.set()
        runner.join(HANG)
    assert not runner.is_alive()
    assert processed, "process_all did not return"

    paused = engine.store.retrieve(wf.id)
    stages = by_ref(paused)
    assert paused.status is S.PAUSED
    assert paused.paused
    assert stages["a"].status is S.SUCCEEDED  # the task in flight finished and committed
    assert stages["a"].outputs == {"a": 1}
    assert stages["b"].tasks[0].status is S.PAUSED  # parked, not run
    assert runs == {"a": 1}
    assert engine.queue.size() == 0

    engine.orchestrator.resume(wf.id)
    engine.processor.process_all(timeout=HANG)

    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert not result.paused
    assert by_ref(result)["b"].status is S.SUCCEEDED
    assert runs == {"a": 1, "b": 1}


def test_unpause_is_resume(make_engine):
    engine = make_engine()
    engine.registry.register("a", lambda s: TaskResult.success())
    wf = chain("a")
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_one()  # starts the workflow; task a is in flight
    engine.orchestrator.pause(wf.id)
    engine.processor.process_all(timeout=HANG)
    assert engine.store.retrieve(wf.id).status is S.PAUSED

    engine.orchestrator.unpause(wf.id)
    engine.processor.process_all(timeout=HANG)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED


def test_start_twice_is_harmless(make_engine):
    engine = make_engine()
    runs: list[str] = []
    engine.registry.register("a", then(lambda s: runs.append("a")))
    wf = chain("a")
    engine.store.store(wf)

    engine.orchestrator.start(wf)
    engine.orchestrator.start(wf)
    kinds = {k for (k,) in engine.query("SELECT kind FROM queue_messages")}
    assert kinds == {START_WORKFLOW}

    engine.processor.process_all(timeout=HANG)
    engine.orchestrator.start(wf)  # after it finished: nothing is queued
    engine.processor.process_all(timeout=HANG)

    assert runs == ["a"]
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert engine.count("queue_messages") == 0


def test_start_stores_an_unstored_workflow(make_engine):
    engine = make_engine()
    engine.registry.register("a", lambda s: TaskResult.success(outputs={"x": 1}))
    wf = chain("a")

    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=HANG)

    stored: Any = engine.store.retrieve(wf.id)
    assert stored.status is S.SUCCEEDED
    assert stored.stages[0].outputs == {"x": 1}


def test_starting_a_workflow_this_process_stored_reads_nothing(make_engine, monkeypatch):
    # The start is queued from this process's cache: one write, no read of the row (on
    # PostgreSQL a round trip less per start).
    from stabilize.backends._base import Transaction
    from stabilize.backends.postgres._transaction import PostgresTransaction

    engine = make_engine()
    engine.registry.register("a", lambda s: TaskResult.success())
    wf = chain("a")
    engine.store.store(wf)
    loads: list[str] = []
    for cls in (Transaction, PostgresTransaction):
        original = cls.workflow

        def counted(tx: Any, workflow_id: str, original: Any = original) -> Any:
            loads.append(workflow_id)
            return original(tx, workflow_id)

        monkeypatch.setattr(cls, "workflow", counted)

    engine.orchestrator.start(wf)

    assert loads == []
    monkeypatch.undo()
    engine.processor.process_all(timeout=HANG)
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED


def test_a_start_queued_from_a_stale_cache_changes_nothing(make_engine):
    # As if another process had started and finished the workflow after this one cached
    # it NOT_STARTED: the start goes out unchecked, and the processor drops it as stale.
    engine = make_engine()
    runs: list[str] = []
    engine.registry.register("a", then(lambda s: runs.append("a")))
    wf = chain("a")
    as_stored = copy.deepcopy(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=HANG)
    finished = engine.store.retrieve(wf.id)
    engine.backend.cache.put(as_stored)  # the stale copy

    engine.orchestrator.start(wf)
    assert engine.count("queue_messages") == 1
    engine.processor.process_all(timeout=HANG)

    assert runs == ["a"]
    again = engine.store.retrieve(wf.id)
    assert (again.status, again.version, again.end_time) == (
        S.SUCCEEDED,
        finished.version,
        finished.end_time,
    )
    assert engine.count("queue_messages") == 0
