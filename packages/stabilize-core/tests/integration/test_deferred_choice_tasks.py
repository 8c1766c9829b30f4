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
