"""Orchestrator.restart: a failed stage runs again and the workflow finishes."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from stabilize import (
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.engine.transitions import RestartError
from stabilize.events import EventReplayer, configure_event_sourcing

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


def diamond() -> Workflow:
    """a, then b and c in parallel, then d joining both."""
    return Workflow.create(
        application="tests",
        name="diamond",
        stages=[
            stage("a", "ok"),
            stage("b", "flaky", {"a"}),
            stage("c", "ok", {"a"}),
            stage("d", "ok", {"b", "c"}),
        ],
    )


def comparable(wf: Workflow) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    return wf.to_dict(), sorted((s.to_dict() for s in wf.stages), key=lambda d: d["id"])


def snapshot(engine: Any, workflow_id: str) -> tuple[Any, ...]:
    """The stored state a refused restart must leave as it was."""
    stored = engine.store.retrieve(workflow_id)
    return (*comparable(stored), engine.queue.size(), engine.count("queue_messages"))


def register_flaky(engine: Any, runs: Counter[str]) -> None:
    """``flaky`` fails its first run and succeeds after; ``ok`` always succeeds."""

    def ok(s: StageExecution) -> TaskResult:
        runs[s.ref_id] += 1
        return TaskResult.success(outputs={s.ref_id: runs[s.ref_id]})

    def flaky(s: StageExecution) -> TaskResult:
        runs[s.ref_id] += 1
        if runs[s.ref_id] == 1:
            return TaskResult.terminal("the first run fails")
        return TaskResult.success(outputs={s.ref_id: runs[s.ref_id]})

    engine.registry.register("ok", ok)
    engine.registry.register("flaky", flaky)


def test_a_failed_stage_restarted_finishes_the_workflow(make_engine, backend):
    events = backend.event_store()
    configure_event_sourcing(events)
    engine = make_engine()
    runs: Counter[str] = Counter()
    register_flaky(engine, runs)
    failed = engine.run(diamond())
    assert failed.status is S.TERMINAL
    assert failed.stage_by_ref_id("b").status is S.TERMINAL
    assert failed.stage_by_ref_id("d").status is S.NOT_STARTED

    engine.orchestrator.restart(failed.id, "b", user="alice")
    restarted = engine.store.retrieve(failed.id)
    assert restarted.status is S.RUNNING
    assert restarted.error is None
    assert restarted.end_time is None
    b = restarted.stage_by_ref_id("b")
    assert b.status is S.RUNNING
    assert b.outputs == {}
    assert b.tasks[0].task_exception_details == {}
    engine.processor.process_all(timeout=HANG)

    done = engine.store.retrieve(failed.id)
    assert done.status is S.SUCCEEDED, done.failure_summary()
    assert {s.ref_id: s.status for s in done.stages} == dict.fromkeys("abcd", S.SUCCEEDED)
    assert done.stage_by_ref_id("b").outputs == {"b": 2}
    # a and c had succeeded: they did not run again; d ran once, after the restart.
    assert runs["a"] == 1
    assert runs["b"] == 2
    assert runs["d"] == 1
    log = events.get_events(done.id)
    kinds = [e.event_type for e in log]
    restart = next(e for e in log if e.event_type == "stage.restarted")
    assert restart.data == {"ref_id": "b", "user": "alice"}
    assert kinds.count("workflow.restarted") == 1
    assert kinds.index("workflow.failed") < kinds.index("workflow.restarted")
    assert kinds[-1] == "workflow.completed"
    assert [e.sequence for e in log] == list(range(1, len(log) + 1))
    replayer = EventReplayer(events)
    assert comparable(replayer.rebuild_workflow_state(done.id)) == comparable(done)
    ended = next(e.sequence for e in log if e.event_type == "workflow.failed")
    before = replayer.rebuild_workflow_state(done.id, as_of_sequence=ended)
    assert before.status is S.TERMINAL
    # A transition's state change comes first among its events: the restart's is there.
    at_restart = replayer.rebuild_workflow_state(done.id, as_of_sequence=restart.sequence)
    assert at_restart.status is S.RUNNING
    assert at_restart.stage_by_ref_id("b").status is S.RUNNING


def test_a_branch_stopped_by_the_failure_runs_again(make_engine, backend, gate, poll):
    """c was running when b failed: the failure canceled it, the restart starts it again."""
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=5, max_workers=4))
    runs: Counter[str] = Counter()
    c_started = threading.Event()

    def slow(s: StageExecution) -> TaskResult:
        runs["c"] += 1
        if runs["c"] == 1:
            c_started.set()
            gate.wait(HANG)
        return TaskResult.success(outputs={"c": runs["c"]})

    def late_flaky(s: StageExecution) -> TaskResult:
        c_started.wait(HANG)  # fail only while c is running
        runs["b"] += 1
        if runs["b"] == 1:
            return TaskResult.terminal("the first run fails")
        return TaskResult.success(outputs={"b": runs["b"]})

    def ok(s: StageExecution) -> TaskResult:
        runs[s.ref_id] += 1
        return TaskResult.success()

    engine.registry.register("ok", ok)
    engine.registry.register("slow", slow)
    engine.registry.register("flaky", late_flaky)
    wf = diamond()
    wf.stage_by_ref_id("c").tasks[0].implementing_class = "slow"
    wf.stage_by_ref_id("c").type = "slow"
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    try:
        poll(lambda: engine.store.retrieve(wf.id).status is S.TERMINAL, "b to fail")
        stopped = engine.store.retrieve(wf.id).stage_by_ref_id("c")
        assert stopped.status is S.CANCELED
        assert stopped.status_reason is None
        engine.orchestrator.restart(wf.id, "b")
        gate.set()
        poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    finally:
        gate.set()
        assert engine.processor.stop(timeout=HANG) == 0
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED, done.failure_summary()
    assert {s.ref_id: s.status for s in done.stages} == dict.fromkeys("abcd", S.SUCCEEDED)
    assert runs["c"] == 2
    assert done.stage_by_ref_id("c").outputs == {"c": 2}


def test_restart_refuses_a_running_stage_and_one_with_a_running_downstream(make_engine, gate, poll):
    engine = make_engine()
    started = threading.Event()

    def blocked(s: StageExecution) -> TaskResult:
        started.set()
        gate.wait(HANG)
        return TaskResult.success()

    engine.registry.register("ok", lambda s: TaskResult.success())
    engine.registry.register("flaky", blocked)
    other = engine.run(Workflow.create("tests", "other", [stage("x", "ok")]))
    wf = diamond()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    try:
        assert started.wait(HANG), "b never started"
        poll(lambda: engine.store.retrieve(wf.id).stage_by_ref_id("c").status.is_complete, "c")
        before = snapshot(engine, wf.id)
        with pytest.raises(RestartError) as running:
            engine.orchestrator.restart(wf.id, "b")
        assert str(running.value) == (
            f"cannot restart stage 'b' of workflow {wf.id}: it is RUNNING; only a finished "
            "stage can be restarted"
        )
        with pytest.raises(RestartError) as upstream:
            engine.orchestrator.restart(wf.id, "a")
        assert "stage 'b', downstream of it, is RUNNING" in str(upstream.value)
        with pytest.raises(RestartError) as waiting:
            engine.orchestrator.restart(wf.id, "d")
        assert str(waiting.value) == (
            f"cannot restart stage 'd' of workflow {wf.id}: it has not run yet"
        )
        with pytest.raises(RestartError) as unknown:
            engine.orchestrator.restart(wf.id, "nope")
        assert str(unknown.value) == f"workflow {wf.id} has no stage 'nope'"
        assert snapshot(engine, wf.id) == before
        gate.set()
        poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    finally:
        gate.set()
        assert engine.processor.stop(timeout=HANG) == 0
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert engine.store.retrieve(other.id).status is S.SUCCEEDED


def test_restart_refuses_a_canceled_workflow(make_engine):
    engine = make_engine()
    runs: Counter[str] = Counter()
    register_flaky(engine, runs)
    wf = diamond()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.orchestrator.cancel(wf.id, user="bob", reason="wrong input")
    engine.processor.process_all(timeout=HANG)
    before = snapshot(engine, wf.id)

    with pytest.raises(RestartError) as refused:
        engine.orchestrator.restart(wf.id, "a")

    assert str(refused.value) == (
        f"cannot restart stage 'a': workflow {wf.id} was canceled by bob (wrong input), "
        "and a canceled workflow stays canceled"
    )
    assert snapshot(engine, wf.id) == before
    assert runs == Counter()


def test_restart_of_a_succeeded_stage_runs_it_and_its_downstream_again(make_engine):
    engine = make_engine()
    runs: Counter[str] = Counter()
    register_flaky(engine, runs)
    wf = Workflow.create("tests", "chain", [stage("a", "ok"), stage("b", "ok", {"a"})])
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED

    engine.orchestrator.restart(done.id, done.stage_by_ref_id("a").id)
    engine.processor.process_all(timeout=HANG)

    again = engine.store.retrieve(done.id)
    assert again.status is S.SUCCEEDED
    assert runs == Counter({"a": 2, "b": 2})
    assert again.stage_by_ref_id("b").outputs == {"b": 2}
