"""restart_stage, the pure transition behind Orchestrator.restart, on generated graphs."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.engine.messages import RUN_TASK, Effects
from stabilize.engine.transitions import (
    RestartError,
    TaskOutcome,
    complete_task,
    restart_stage,
    start_workflow,
)
from stabilize.models import StageExecution, TaskExecution, Workflow, WorkflowStatus

S = WorkflowStatus
T0 = 1_000


def graph(edges: list[tuple[int, int]], n: int) -> Workflow:
    stages = [
        StageExecution(
            ref_id=f"s{i}",
            type="test",
            name=f"s{i}",
            requisite_stage_ref_ids={f"s{a}" for a, b in edges if b == i},
            tasks=[TaskExecution.create("t", "noop")],
        )
        for i in range(n)
    ]
    return Workflow.create("app", "generated", stages)


def drive(wf: Workflow, fx: Effects, failing: set[str], now: int) -> None:
    """Run every RunTask to the end: stages in ``failing`` end TERMINAL, others succeed."""
    queue = deque(fx.messages)
    while queue:
        message = queue.popleft()
        if message.kind != RUN_TASK:
            continue
        assert message.stage_id is not None
        assert message.task_id is not None
        ref = wf.stage_by_id(message.stage_id).ref_id
        outcome = (
            TaskOutcome(S.TERMINAL, error="boom") if ref in failing else TaskOutcome(S.SUCCEEDED)
        )
        out = complete_task(
            wf, message.stage_id, message.task_id, outcome, now, message.payload.get("run")
        )
        queue.extend(out.messages)


dags = st.integers(2, 8).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda e: e[0] < e[1]),
            max_size=2 * n,
            unique=True,
        ),
        st.integers(0, n - 1),
    )
)


@settings(max_examples=200, deadline=None)
@given(dags)
@example((3, [(0, 1), (0, 2)], 1))  # a sibling still running when the failure ends the run
def test_a_restarted_failure_runs_to_success_and_keeps_the_join_counts(
    case: tuple[int, list[tuple[int, int]], int],
) -> None:
    n, edges, fail = case
    wf = graph(edges, n)
    failing = {f"s{fail}"}
    drive(wf, start_workflow(wf, T0), failing, T0 + 1)
    failed = wf.stage_by_ref_id(f"s{fail}")
    assert (wf.status, failed.status) == (S.TERMINAL, S.TERMINAL)

    fx = restart_stage(wf, failed.ref_id, "alice", T0 + 2)

    index = wf.index
    assert (wf.status, failed.status, wf.error) == (S.RUNNING, S.RUNNING, None)
    for ref in index.descendants(failed.ref_id):
        assert index.by_ref[ref].status is S.NOT_STARTED
    # The join counters kept in step equal a recount from the statuses.
    for stage in wf.stages:
        pending = sum(1 for up in index.upstream[stage.ref_id] if not up.status.is_complete)
        assert index.pending_upstream[stage.ref_id] == pending, stage.ref_id
    assert [e.event_type for e in fx.events][:2] == ["workflow.restarted", "stage.restarted"]
    drive(wf, fx, set(), T0 + 3)
    assert {wf.status, *(s.status for s in wf.stages)} == {S.SUCCEEDED}


def test_refusals_name_the_stage_and_change_nothing() -> None:
    wf = graph([(0, 1)], 2)
    fx = start_workflow(wf, T0)
    before = (wf.to_dict(), [s.to_dict() for s in wf.stages])
    with pytest.raises(RestartError, match=r"stage 's0' .* it is RUNNING"):
        restart_stage(wf, "s0", None, T0 + 1)
    with pytest.raises(RestartError, match=r"stage 's1' .* it has not run yet"):
        restart_stage(wf, "s1", None, T0 + 1)
    with pytest.raises(RestartError, match=r"has no stage 'nope'"):
        restart_stage(wf, "nope", None, T0 + 1)
    assert (wf.to_dict(), [s.to_dict() for s in wf.stages]) == before
    assert fx.messages  # the first task's run is still the only work
