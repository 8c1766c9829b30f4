"""Deferred choice between ordinary tasks: exactly one branch ever runs (issue 14).

On SQLite and PostgreSQL (the ``backend`` fixture, through ``make_engine``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from stabilize import JoinType, StageExecution, TaskExecution, TaskResult, Workflow
from stabilize import WorkflowStatus as S

MakeEngine = Callable[..., Any]


def stage(ref: str, kind: str, after: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=kind,
        name=ref,
        requisite_stage_ref_ids=after or set(),
        tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
        **flow,
    )


def test_only_the_first_branch_to_start_runs(make_engine: MakeEngine) -> None:
    engine = make_engine()
    ran: list[str] = []
    lock = threading.Lock()

    def strategy(s: StageExecution) -> TaskResult:
        with lock:
            ran.append(s.ref_id)
        return TaskResult.success(outputs={"winner": s.ref_id})

    engine.registry.register("strategy", strategy)
    engine.registry.register(
        "use", lambda s: TaskResult.success(outputs={"used": s.context["winner"]})
    )
    wf = Workflow.create(
        application="demo",
        name="race",
        stages=[
            stage("fast", "strategy", deferred_choice_group="pick"),
            stage("slow", "strategy", deferred_choice_group="pick"),
            stage("use", "use", {"fast", "slow"}, join_type=JoinType.OR),
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED, done.error
    assert len(ran) == 1, ran
    winner = ran[0]
    loser = "slow" if winner == "fast" else "fast"
    lost = done.stage_by_ref_id(loser)
    assert (lost.status, lost.status_reason) == (S.SKIPPED, "withdrawn")
    assert lost.tasks[0].status is S.NOT_STARTED
    assert done.stage_by_ref_id("use").outputs["used"] == winner


def test_canceling_the_running_member_starts_the_one_held_for_it(make_engine, gate, poll):
    engine = make_engine()
    started: list[str] = []

    def strategy(s: StageExecution) -> TaskResult:
        started.append(s.ref_id)
        if len(started) == 1:
            gate.wait(30)  # the first member to start runs until the test cancels it
        return TaskResult.success(outputs={"winner": s.ref_id})

    engine.registry.register("strategy", strategy)
    engine.registry.register("use", lambda s: TaskResult.success())
    wf = Workflow.create(
        application="demo",
        name="cancel a member",
        stages=[
            stage("first", "strategy", deferred_choice_group="pick"),
            stage("second", "strategy", deferred_choice_group="pick"),
            stage("use", "use", {"first", "second"}, join_type=JoinType.OR),
        ],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    poll(lambda: len(started) == 1, "one member to start")
    running = started[0]
    held = "second" if running == "first" else "first"
    assert engine.store.retrieve(wf.id).stage_by_ref_id(held).status is S.BUFFERED

    engine.orchestrator.cancel_stage(wf.id, running, reason="not this one")
    gate.set()
    poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")

    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED, done.error
    assert done.stage_by_ref_id(running).status is S.CANCELED
    assert done.stage_by_ref_id(held).status is S.SUCCEEDED
    assert started == [running, held]


def test_a_member_that_jumps_forward_is_the_choice(make_engine):
    engine = make_engine()
    engine.registry.register("leap", lambda s: TaskResult.jump_to("use"))
    engine.registry.register("use", lambda s: TaskResult.success())
    wf = Workflow.create(
        application="demo",
        name="jump out of a choice",
        stages=[
            stage("first", "leap", deferred_choice_group="pick"),
            stage("second", "leap", deferred_choice_group="pick"),
            stage("use", "use", {"first", "second"}, join_type=JoinType.OR),
        ],
    )
    done = engine.run(wf, timeout=30)
    assert done.status is S.SUCCEEDED, done.error
    statuses = sorted(done.stage_by_ref_id(r).status.value for r in ("first", "second"))
    assert statuses == ["SKIPPED", "SUCCEEDED"]
    assert done.stage_by_ref_id("use").status is S.SUCCEEDED
