"""The pure state machine (engine/transitions.py), driven with plain objects and a fixed now."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from stabilize.engine.messages import RUN_TASK, SIGNAL_TIMEOUT, Effects
from stabilize.engine.transitions import (
    TaskOutcome,
    cancel_workflow,
    complete_task,
    mark_stage,
    pause_workflow,
    prepare_task,
    resume_workflow,
    start_workflow,
)
from stabilize.models import StageExecution, TaskExecution, Workflow, WorkflowStatus

S = WorkflowStatus
T0 = 1_000
T1 = 2_000
T2 = 3_000

OK = TaskOutcome(S.SUCCEEDED)


def make_stage(
    ref: str,
    requires: Iterable[str] = (),
    *,
    tasks: Sequence[str] = ("t1",),
    context: dict[str, Any] | None = None,
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="test",
        name=ref,
        requisite_stage_ref_ids=set(requires),
        context=dict(context or {}),
        tasks=[TaskExecution.create(name, "noop") for name in tasks],
    )


def make_workflow(*stages: StageExecution, context: dict[str, Any] | None = None) -> Workflow:
    return Workflow.create("app", "wf", list(stages), context=context)


def started(*stages: StageExecution, context: dict[str, Any] | None = None) -> Workflow:
    wf = make_workflow(*stages, context=context)
    fx = start_workflow(wf, T0)
    assert not fx.stale
    return wf


def task_of(wf: Workflow, ref: str, name: str = "t1") -> TaskExecution:
    return next(t for t in wf.stage_by_ref_id(ref).tasks if t.name == name)


def running_task(wf: Workflow, ref: str) -> TaskExecution:
    return next(t for t in wf.stage_by_ref_id(ref).tasks if t.status is S.RUNNING)


def finish(wf: Workflow, ref: str, outcome: TaskOutcome = OK, now: int = T1) -> Effects:
    """Complete the task now running in stage ``ref``."""
    stage = wf.stage_by_ref_id(ref)
    return complete_task(wf, stage.id, running_task(wf, ref).id, outcome, now)


def queued(wf: Workflow, fx: Effects) -> list[tuple[str, str, int]]:
    """The RunTask messages of ``fx`` as (stage ref, task name, delay_ms)."""
    out = []
    for m in fx.messages:
        assert m.kind == RUN_TASK
        assert m.workflow_id == wf.id
        assert m.stage_id is not None
        assert m.task_id is not None
        stage = wf.stage_by_id(m.stage_id)
        out.append((stage.ref_id, stage.task_by_id(m.task_id).name, m.delay_ms))
    return out


def event_types(fx: Effects) -> list[str]:
    return [e.event_type for e in fx.events]


def events_of(fx: Effects, event_type: str) -> list[dict[str, Any]]:
    return [e.data for e in fx.events if e.event_type == event_type]


def assert_nothing_happened(fx: Effects) -> None:
    assert fx.stale
    assert fx.messages == []
    assert fx.events == []
    assert fx.stages == {}
    assert not fx.workflow_changed
    assert not fx.drop_messages


def status_of(wf: Workflow) -> WorkflowStatus:
    """The workflow status, read through a call so mypy does not narrow it across steps."""
    return wf.status


def statuses(wf: Workflow) -> dict[str, WorkflowStatus]:
    return {s.ref_id: s.status for s in wf.stages}


# --- start_workflow ---------------------------------------------------------------------------


def test_start_workflow_starts_initial_stages_and_queues_their_first_task() -> None:
    wf = make_workflow(make_stage("a", tasks=("t1", "t2")), make_stage("b"), make_stage("c", ["a"]))
    fx = start_workflow(wf, T0)
    assert status_of(wf) is S.RUNNING
    assert wf.start_time == T0
    assert fx.workflow_changed
    assert statuses(wf) == {"a": S.RUNNING, "b": S.RUNNING, "c": S.NOT_STARTED}
    a, b = wf.stage_by_ref_id("a"), wf.stage_by_ref_id("b")
    assert a.start_time == T0
    assert task_of(wf, "a", "t1").status is S.RUNNING
    assert task_of(wf, "a", "t1").start_time == T0
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert queued(wf, fx) == [("a", "t1", 0), ("b", "t1", 0)]
    assert set(fx.stages) == {a.id, b.id}
    assert event_types(fx) == [
        "workflow.started",
        "stage.started",
        "task.started",
        "stage.started",
        "task.started",
    ]
    assert fx.events[0].entity_type == "workflow"
    assert fx.events[0].entity_id == wf.id
    assert fx.events[1].data == {"ref_id": "a"}
    assert fx.events[2].entity_id == task_of(wf, "a", "t1").id
    assert not fx.drop_messages
    assert not fx.stale
    assert wf.index.active == {a.id, b.id}


def test_start_workflow_twice_is_stale() -> None:
    wf = started(make_stage("a"))
    assert_nothing_happened(start_workflow(wf, T1))
    assert wf.start_time == T0


def test_start_workflow_without_stages_succeeds_at_once() -> None:
    wf = make_workflow()
    fx = start_workflow(wf, T0)
    assert status_of(wf) is S.SUCCEEDED
    assert wf.end_time == T0
    assert event_types(fx) == ["workflow.started", "workflow.completed"]


def test_stage_without_tasks_completes_at_once_and_starts_children() -> None:
    wf = make_workflow(make_stage("gate", tasks=()), make_stage("b", ["gate"]))
    fx = start_workflow(wf, T0)
    assert statuses(wf) == {"gate": S.SUCCEEDED, "b": S.RUNNING}
    assert queued(wf, fx) == [("b", "t1", 0)]
    assert status_of(wf) is S.RUNNING


# --- complete_task: success -------------------------------------------------------------------


def test_success_starts_next_task_of_the_stage() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2"), context={"c0": 0}))
    outcome = TaskOutcome(S.SUCCEEDED, context={"c1": 1}, outputs={"o1": 1})
    fx = finish(wf, "a", outcome)
    a = wf.stage_by_ref_id("a")
    t1, t2 = a.tasks
    assert t1.status is S.SUCCEEDED
    assert t1.end_time == T1
    assert t2.status is S.RUNNING
    assert t2.start_time == T1
    assert a.status is S.RUNNING
    assert a.context == {"c0": 0, "c1": 1}
    assert a.outputs == {"o1": 1}
    assert queued(wf, fx) == [("a", "t2", 0)]
    assert event_types(fx) == ["task.completed", "task.started"]
    assert fx.events[0].data["outputs"] == {"o1": 1}
    assert fx.events[0].data["status"] == "SUCCEEDED"
    assert status_of(wf) is S.RUNNING


def test_last_task_completes_stage_and_starts_next_stage() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]))
    fx = finish(wf, "a", TaskOutcome(S.SUCCEEDED, outputs={"x": 1}))
    a = wf.stage_by_ref_id("a")
    assert a.status is S.SUCCEEDED
    assert a.end_time == T1
    assert statuses(wf)["b"] is S.RUNNING
    assert wf.stage_by_ref_id("b").start_time == T1
    assert queued(wf, fx) == [("b", "t1", 0)]
    assert event_types(fx) == ["task.completed", "stage.completed", "stage.started", "task.started"]
    assert status_of(wf) is S.RUNNING


def test_join_waits_for_every_upstream_then_starts_exactly_once() -> None:
    wf = started(
        make_stage("a"), make_stage("b", ["a"]), make_stage("c", ["a"]), make_stage("d", ["b", "c"])
    )
    fx_a = finish(wf, "a")
    assert queued(wf, fx_a) == [("b", "t1", 0), ("c", "t1", 0)]
    assert wf.index.pending_upstream["d"] == 2

    fx_b = finish(wf, "b")
    assert statuses(wf)["d"] is S.NOT_STARTED
    assert queued(wf, fx_b) == []
    assert wf.index.pending_upstream["d"] == 1

    fx_c = finish(wf, "c")
    assert statuses(wf)["d"] is S.RUNNING
    assert queued(wf, fx_c) == [("d", "t1", 0)]
    assert wf.index.pending_upstream["d"] == 0

    all_d = [m for fx in (fx_a, fx_b, fx_c) for m in queued(wf, fx) if m[0] == "d"]
    assert all_d == [("d", "t1", 0)]
    assert event_types(fx_c).count("stage.started") == 1


def test_workflow_succeeds_when_the_last_stage_completes() -> None:
    wf = started(make_stage("a"), make_stage("b"))
    fx_a = finish(wf, "a", now=T1)
    assert status_of(wf) is S.RUNNING
    assert "workflow.completed" not in event_types(fx_a)
    fx_b = finish(wf, "b", now=T2)
    assert status_of(wf) is S.SUCCEEDED
    assert wf.end_time == T2
    assert fx_b.workflow_changed
    assert event_types(fx_b)[-1] == "workflow.completed"
    assert fx_b.events[-1].data == {"status": "SUCCEEDED"}
    assert wf.index.active == set()
    assert wf.error is None
    assert not fx_b.drop_messages


# --- complete_task: failures ------------------------------------------------------------------


def test_terminal_fails_fast_and_cancels_other_active_stages() -> None:
    wf = started(make_stage("a"), make_stage("b", tasks=("t1", "t2")), make_stage("c", ["a", "b"]))
    b = wf.stage_by_ref_id("b")
    fx = finish(wf, "a", TaskOutcome(S.TERMINAL, error="boom"), now=T1)
    a = wf.stage_by_ref_id("a")
    assert a.status is S.TERMINAL
    assert a.end_time == T1
    assert task_of(wf, "a").status is S.TERMINAL
    assert task_of(wf, "a").task_exception_details == {"message": "boom"}
    assert b.status is S.CANCELED
    assert b.end_time == T1
    assert task_of(wf, "b", "t1").status is S.CANCELED
    assert task_of(wf, "b", "t2").status is S.NOT_STARTED
    assert statuses(wf)["c"] is S.NOT_STARTED
    assert status_of(wf) is S.TERMINAL
    assert wf.end_time == T1
    assert wf.error == "boom"
    assert fx.drop_messages
    assert fx.workflow_changed
    assert fx.messages == []
    assert b.id in fx.stages
    assert event_types(fx) == ["task.failed", "stage.failed", "stage.canceled", "workflow.failed"]
    assert events_of(fx, "workflow.failed") == [{"status": "TERMINAL", "error": "boom"}]
    assert wf.index.active == set()


def test_terminal_error_details_are_kept_on_the_task() -> None:
    wf = started(make_stage("a"))
    details = {"exception_type": "ValueError", "message": "bad", "traceback": "tb"}
    finish(wf, "a", TaskOutcome(S.TERMINAL, error="bad", error_details=details))
    assert task_of(wf, "a").task_exception_details == details


def test_terminal_without_an_error_names_the_stage_in_the_workflow_error() -> None:
    wf = started(make_stage("a"))
    finish(wf, "a", TaskOutcome(S.TERMINAL))
    assert status_of(wf) is S.TERMINAL
    assert wf.error == "stage 'a' ended TERMINAL"


def test_terminal_in_first_task_skips_the_rest_of_the_stage() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    fx = finish(wf, "a", TaskOutcome(S.TERMINAL, error="x"))
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert fx.messages == []


def test_failed_continue_lets_downstream_run_and_workflow_succeeds() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]))
    fx = finish(wf, "a", TaskOutcome(S.FAILED_CONTINUE, error="meh", outputs={"partial": 1}))
    a = wf.stage_by_ref_id("a")
    assert a.status is S.FAILED_CONTINUE
    assert a.outputs == {"partial": 1}
    assert task_of(wf, "a").status is S.FAILED_CONTINUE
    assert task_of(wf, "a").task_exception_details == {"message": "meh"}
    assert statuses(wf)["b"] is S.RUNNING
    assert queued(wf, fx) == [("b", "t1", 0)]
    assert not fx.drop_messages
    assert event_types(fx) == ["task.failed", "stage.failed", "stage.started", "task.started"]
    fx_b = finish(wf, "b", now=T2)
    assert status_of(wf) is S.SUCCEEDED
    assert wf.error is None
    assert "workflow.completed" in event_types(fx_b)


def test_skipped_task_skips_the_stage_and_downstream_runs() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")), make_stage("b", ["a"]))
    fx = finish(wf, "a", TaskOutcome(S.SKIPPED))
    assert statuses(wf) == {"a": S.SKIPPED, "b": S.RUNNING}
    assert task_of(wf, "a", "t1").status is S.SKIPPED
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert event_types(fx) == ["task.completed", "stage.skipped", "stage.started", "task.started"]
    assert queued(wf, fx) == [("b", "t1", 0)]


def test_suspend_parks_the_stage_and_the_workflow_keeps_running() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]))
    fx = finish(wf, "a", TaskOutcome(S.SUSPENDED, context={"waiting_for": "approval"}))
    a = wf.stage_by_ref_id("a")
    assert a.status is S.SUSPENDED
    assert task_of(wf, "a").status is S.SUSPENDED
    assert a.context == {"waiting_for": "approval"}
    assert statuses(wf)["b"] is S.NOT_STARTED
    assert status_of(wf) is S.RUNNING
    assert a.id in wf.index.active
    assert fx.messages == []
    assert event_types(fx) == ["task.suspended", "stage.suspended"]


def test_a_suspension_timer_comes_from_the_outcome_not_the_context() -> None:
    wf = started(make_stage("a"))
    fx = finish(wf, "a", TaskOutcome(S.SUSPENDED, signal_timeout=1.5))
    [timer] = fx.messages
    assert (timer.kind, timer.stage_id, timer.delay_ms) == (
        SIGNAL_TIMEOUT,
        wf.stage_by_ref_id("a").id,
        1500,
    )
    assert events_of(fx, "stage.suspended") == [{"timeout_seconds": 1.5}]
    assert wf.stage_by_ref_id("a").context == {}


def test_the_old_timer_key_in_a_result_s_context_sets_no_timer() -> None:
    # _signal_timeout_seconds was never documented: suspend(signal_timeout=) replaced it.
    wf = started(make_stage("a"))
    fx = finish(wf, "a", TaskOutcome(S.SUSPENDED, context={"_signal_timeout_seconds": 1}))
    assert fx.messages == []


def test_task_canceled_outcome_ends_the_workflow_canceled() -> None:
    wf = started(make_stage("a"), make_stage("b"))
    fx = finish(wf, "a", TaskOutcome(S.CANCELED))
    assert status_of(wf) is S.CANCELED
    assert statuses(wf) == {"a": S.CANCELED, "b": S.CANCELED}
    assert fx.drop_messages
    assert event_types(fx)[-1] == "workflow.canceled"


# --- complete_task: the task's own state (issue 18) -------------------------------------------


@pytest.mark.parametrize(
    "outcome",
    [
        TaskOutcome(S.RUNNING, state={"n": 2}),
        TaskOutcome(S.RUNNING, state={"n": 2}, retry=True),
        TaskOutcome(S.SUSPENDED, state={"n": 2}),
        TaskOutcome(S.SUCCEEDED, state={"n": 2}),
        TaskOutcome(S.TERMINAL, state={"n": 2}, error="x"),
    ],
)
def test_an_outcome_s_state_replaces_the_task_s_state(outcome: TaskOutcome) -> None:
    wf = started(make_stage("a"))
    task_of(wf, "a").state = {"n": 1, "old": True}
    fx = finish(wf, "a", outcome)
    assert task_of(wf, "a").state == {"n": 2}
    assert wf.stage_by_ref_id("a").id in fx.stages
    assert wf.stage_by_ref_id("a").context == {}


def test_an_outcome_without_state_keeps_it() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    task_of(wf, "a").state = {"n": 1}
    finish(wf, "a", TaskOutcome(S.RUNNING))
    finish(wf, "a")
    assert task_of(wf, "a").state == {"n": 1}


def test_a_jump_back_resets_task_state_but_kept_and_hands_the_target_its_state() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")), make_stage("b", ["a"]))
    task_of(wf, "a", "t1").state = {"polls": 3, "kept": {"runs": 1}}
    task_of(wf, "a", "t2").state = {"polls": 1, "kept": {"runs": 2}}
    finish(wf, "a")
    finish(wf, "a")
    task_of(wf, "b").state = {"b": 1}
    finish(wf, "b", TaskOutcome(S.REDIRECT, target_stage_ref_id="a", state={"handed": True}))
    assert task_of(wf, "a", "t1").state == {"handed": True}
    assert task_of(wf, "a", "t2").state == {"kept": {"runs": 2}}
    assert task_of(wf, "b").state == {}
    assert wf.stage_by_ref_id("b").jump_count == 1


def test_a_jump_without_state_leaves_the_target_what_its_reset_kept() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]))
    task_of(wf, "a").state = {"polls": 3, "kept": {"runs": 1}}
    finish(wf, "a")
    finish(wf, "b", TaskOutcome(S.REDIRECT, target_stage_ref_id="a"))
    assert task_of(wf, "a").state == {"kept": {"runs": 1}}


def test_a_forward_jump_hands_its_state_to_the_target() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]), make_stage("c", ["b"]))
    finish(wf, "a", TaskOutcome(S.REDIRECT, target_stage_ref_id="c", state={"from": "a"}))
    assert statuses(wf)["b"] is S.SKIPPED
    assert task_of(wf, "c").state == {"from": "a"}
    assert task_of(wf, "a").state == {}


# --- complete_task: running and retry ---------------------------------------------------------


def test_running_requeues_the_same_task_with_its_delay() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    t1 = task_of(wf, "a", "t1")
    fx = finish(wf, "a", TaskOutcome(S.RUNNING, context={"polls": 1}, delay_ms=1500))
    assert t1.status is S.RUNNING
    assert t1.start_time == T0  # still the first start
    assert t1.retry_count == 0
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert wf.stage_by_ref_id("a").context == {"polls": 1}
    assert queued(wf, fx) == [("a", "t1", 1500)]
    assert event_types(fx) == ["context.updated"]
    assert fx.events[0].data == {"context": {"polls": 1}}


def test_running_without_context_emits_no_event() -> None:
    wf = started(make_stage("a"))
    fx = finish(wf, "a", TaskOutcome(S.RUNNING, delay_ms=10))
    assert queued(wf, fx) == [("a", "t1", 10)]
    assert fx.events == []


def test_retry_increments_retry_count_and_merges_context_update() -> None:
    wf = started(make_stage("a", context={"keep": True}))
    t1 = task_of(wf, "a")
    details = {"exception_type": "TransientError", "message": "flaky"}
    fx = finish(
        wf,
        "a",
        TaskOutcome(
            S.RUNNING,
            context={"cursor": 5},
            retry=True,
            delay_ms=2000,
            error="flaky",
            error_details=details,
        ),
    )
    assert t1.retry_count == 1
    assert t1.status is S.RUNNING
    assert t1.task_exception_details == details
    assert wf.stage_by_ref_id("a").context == {"keep": True, "cursor": 5}
    assert queued(wf, fx) == [("a", "t1", 2000)]
    assert event_types(fx) == ["task.retried"]
    assert fx.events[0].data == {
        "stage_id": wf.stage_by_ref_id("a").id,
        "attempt": 1,
        "error": "flaky",
        "delay_ms": 2000,
        "context": {"cursor": 5},
    }
    fx2 = finish(wf, "a", TaskOutcome(S.RUNNING, context={"cursor": 9}, retry=True, delay_ms=1))
    assert t1.retry_count == 2
    assert wf.stage_by_ref_id("a").context["cursor"] == 9
    assert fx2.events[0].data["attempt"] == 2


# --- jumps ------------------------------------------------------------------------------------


def chain_abcd() -> Workflow:
    return started(
        make_stage("a"), make_stage("b", ["a"]), make_stage("c", ["b"]), make_stage("d", ["c"])
    )


def test_jump_backward_resets_target_and_stages_between_and_reruns_the_target() -> None:
    wf = chain_abcd()
    finish(wf, "a", TaskOutcome(S.SUCCEEDED, outputs={"from_a": 1}))
    finish(wf, "b", TaskOutcome(S.SUCCEEDED, outputs={"from_b": 1}))
    fx = finish(
        wf,
        "c",
        TaskOutcome(S.REDIRECT, target_stage_ref_id="a", context={"again": True}),
        now=T2,
    )
    a, b, c = (wf.stage_by_ref_id(r) for r in "abc")
    assert statuses(wf) == {
        "a": S.RUNNING,
        "b": S.NOT_STARTED,
        "c": S.NOT_STARTED,
        "d": S.NOT_STARTED,
    }
    assert a.outputs == {}
    assert b.outputs == {}
    assert a.context == {"again": True}
    assert a.start_time == T2
    assert (b.start_time, b.end_time, c.start_time) == (None, None, None)
    assert task_of(wf, "a").status is S.RUNNING
    assert task_of(wf, "b").status is S.NOT_STARTED
    assert task_of(wf, "c").status is S.NOT_STARTED
    assert wf.jump_count == 1
    assert fx.workflow_changed
    assert queued(wf, fx) == [("a", "t1", 0)]
    assert {a.id, b.id, c.id} <= set(fx.stages)
    assert events_of(fx, "jump.executed") == [
        {"source": "c", "target": "a", "jump_count": 1, "context": {"again": True}}
    ]
    assert event_types(fx) == ["jump.executed", "stage.started", "task.started"]
    # the counters are consistent again: b waits for a, c for b, only a is active
    assert wf.index.pending_upstream["b"] == 1
    assert wf.index.pending_upstream["c"] == 1
    assert wf.index.active == {a.id}
    # and the workflow runs to completion through the reset stages
    finish(wf, "a")
    finish(wf, "b")
    finish(wf, "c")
    fx_d = finish(wf, "d")
    assert status_of(wf) is S.SUCCEEDED
    assert "workflow.completed" in event_types(fx_d)


def test_jump_backward_to_own_stage_restarts_it() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")), make_stage("b", ["a"]))
    finish(wf, "a")
    fx = finish(wf, "a", TaskOutcome(S.REDIRECT, target_stage_ref_id="a", context={"n": 2}))
    a = wf.stage_by_ref_id("a")
    assert a.status is S.RUNNING
    assert task_of(wf, "a", "t1").status is S.RUNNING
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert a.context == {"n": 2}
    assert a.jump_count == 1  # the jumping stage counts its jumps
    assert queued(wf, fx) == [("a", "t1", 0)]
    assert wf.jump_count == 1


def test_jump_backward_leaves_a_parallel_branch_alone() -> None:
    # a -> b -> c, a -> side: c jumps back to b; a and side are not reset
    wf = started(
        make_stage("a"), make_stage("b", ["a"]), make_stage("side", ["a"]), make_stage("c", ["b"])
    )
    finish(wf, "a")
    finish(wf, "side")
    finish(wf, "b")
    finish(wf, "c", TaskOutcome(S.REDIRECT, target_stage_ref_id="b"))
    assert statuses(wf) == {
        "a": S.SUCCEEDED,
        "b": S.RUNNING,
        "side": S.SUCCEEDED,
        "c": S.NOT_STARTED,
    }


def test_jump_forward_skips_the_stages_between() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]), make_stage("c", ["b"]))
    fx = finish(
        wf,
        "a",
        TaskOutcome(S.REDIRECT, target_stage_ref_id="c", context={"via": "jump"}, outputs={"o": 1}),
    )
    assert statuses(wf) == {"a": S.SUCCEEDED, "b": S.SKIPPED, "c": S.RUNNING}
    assert task_of(wf, "a").status is S.SUCCEEDED
    assert task_of(wf, "b").status is S.NOT_STARTED
    assert wf.stage_by_ref_id("c").context == {"via": "jump"}
    assert wf.stage_by_ref_id("a").outputs == {"o": 1}  # a forward jump completes the jumper
    assert queued(wf, fx) == [("c", "t1", 0)]
    assert wf.jump_count == 1
    assert events_of(fx, "stage.skipped") == [{"status": "SKIPPED"}]
    assert "jump.executed" in event_types(fx)
    fx_c = finish(wf, "c")
    assert status_of(wf) is S.SUCCEEDED
    assert "workflow.completed" in event_types(fx_c)


def test_jump_bound_by_max_jumps_fails_the_task_with_a_clear_message() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]), context={"_max_jumps": 2})
    finish(wf, "a")
    back = TaskOutcome(S.REDIRECT, target_stage_ref_id="a")
    for _ in range(2):
        finish(wf, "b", back)
        finish(wf, "a")
    assert wf.jump_count == 2
    fx = finish(wf, "b", back)
    assert status_of(wf) is S.TERMINAL
    assert statuses(wf) == {"a": S.SUCCEEDED, "b": S.TERMINAL}
    assert wf.jump_count == 2
    message = task_of(wf, "b").task_exception_details["message"]
    assert "_max_jumps" in message
    assert "'b' tried to jump to 'a' after 2 jumps; the limit is 2" in message
    assert wf.error == message
    assert fx.drop_messages
    assert event_types(fx)[0] == "task.failed"
    assert fx.messages == []


def test_jump_default_limit_is_ten() -> None:
    wf = started(make_stage("a"))
    redirect = TaskOutcome(S.REDIRECT, target_stage_ref_id="a")
    for _ in range(10):
        finish(wf, "a", redirect)
    assert wf.jump_count == 10
    assert status_of(wf) is S.RUNNING
    finish(wf, "a", redirect)
    assert status_of(wf) is S.TERMINAL
    assert "the limit is 10" in (wf.error or "")


def test_jump_to_unknown_stage_fails_the_task() -> None:
    wf = started(make_stage("a"), make_stage("b", ["a"]))
    fx = finish(wf, "a", TaskOutcome(S.REDIRECT, target_stage_ref_id="nope"))
    assert status_of(wf) is S.TERMINAL
    assert task_of(wf, "a").status is S.TERMINAL
    assert "no stage 'nope'" in task_of(wf, "a").task_exception_details["message"]
    assert "no stage 'nope'" in (wf.error or "")
    assert wf.jump_count == 0
    assert statuses(wf)["b"] is S.NOT_STARTED
    assert fx.drop_messages


def test_jump_to_an_unrelated_stage_fails_the_task() -> None:
    wf = started(make_stage("a"), make_stage("x"))
    finish(wf, "a", TaskOutcome(S.REDIRECT, target_stage_ref_id="x"))
    assert status_of(wf) is S.TERMINAL
    assert "neither an ancestor nor a descendant" in (wf.error or "")


def test_plain_redirect_restarts_the_current_stage_from_its_first_task() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    finish(wf, "a")
    fx = finish(wf, "a", TaskOutcome(S.REDIRECT, context={"round": 2}))
    assert task_of(wf, "a", "t1").status is S.RUNNING
    assert task_of(wf, "a", "t2").status is S.NOT_STARTED
    assert wf.stage_by_ref_id("a").context == {"round": 2}
    assert wf.stage_by_ref_id("a").jump_count == 1
    assert wf.jump_count == 1
    assert queued(wf, fx) == [("a", "t1", 0)]


# --- stale results ----------------------------------------------------------------------------


def test_result_for_a_task_that_is_no_longer_running_is_stale() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    t1 = task_of(wf, "a", "t1")
    stage_id = wf.stage_by_ref_id("a").id
    complete_task(wf, stage_id, t1.id, OK, T1)
    before = (t1.status, t1.end_time, wf.stage_by_ref_id("a").outputs)
    fx = complete_task(wf, stage_id, t1.id, TaskOutcome(S.SUCCEEDED, outputs={"late": 1}), T2)
    assert_nothing_happened(fx)
    assert (t1.status, t1.end_time, wf.stage_by_ref_id("a").outputs) == before


def test_result_for_a_canceled_workflow_is_stale() -> None:
    wf = started(make_stage("a"))
    a = wf.stage_by_ref_id("a")
    t1 = task_of(wf, "a")
    cancel_workflow(wf, "ann", None, T1)
    fx = complete_task(wf, a.id, t1.id, TaskOutcome(S.SUCCEEDED, outputs={"x": 1}), T2)
    assert_nothing_happened(fx)
    assert status_of(wf) is S.CANCELED
    assert a.outputs == {}


def test_result_for_a_running_task_of_a_finished_workflow_is_stale() -> None:
    wf = started(make_stage("a"))
    a = wf.stage_by_ref_id("a")
    t1 = task_of(wf, "a")
    wf.status = S.CANCELED  # the task row itself was left RUNNING
    assert_nothing_happened(complete_task(wf, a.id, t1.id, OK, T2))
    assert t1.status is S.RUNNING


def test_result_for_unknown_stage_or_task_is_stale() -> None:
    wf = started(make_stage("a"))
    a = wf.stage_by_ref_id("a")
    assert_nothing_happened(complete_task(wf, "no-stage", task_of(wf, "a").id, OK, T1))
    assert_nothing_happened(complete_task(wf, a.id, "no-task", OK, T1))


# --- prepare_task -----------------------------------------------------------------------------


def test_prepare_task_lets_a_running_task_run() -> None:
    wf = started(make_stage("a"))
    assert prepare_task(wf, wf.stage_by_ref_id("a").id, task_of(wf, "a").id, T1) is None


def test_prepare_task_is_stale_for_a_task_not_running_or_unknown() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    a = wf.stage_by_ref_id("a")
    for stage_id, task_id in [
        (a.id, task_of(wf, "a", "t2").id),
        (a.id, "nope"),
        ("nope", task_of(wf, "a", "t1").id),
    ]:
        fx = prepare_task(wf, stage_id, task_id, T1)
        assert fx is not None
        assert_nothing_happened(fx)


def test_prepare_task_is_stale_once_the_workflow_ended() -> None:
    wf = started(make_stage("a"))
    a = wf.stage_by_ref_id("a")
    t1 = task_of(wf, "a")
    wf.status = S.TERMINAL
    fx = prepare_task(wf, a.id, t1.id, T1)
    assert fx is not None
    assert fx.stale


# --- cancel -----------------------------------------------------------------------------------


def test_cancel_cancels_running_stages_and_drops_messages() -> None:
    wf = started(make_stage("a"), make_stage("b"), make_stage("c", ["a"]))
    fx = cancel_workflow(wf, "ann", "no longer needed", T1)
    assert status_of(wf) is S.CANCELED
    assert wf.is_canceled
    assert wf.canceled_by == "ann"
    assert wf.cancellation_reason == "no longer needed"
    assert wf.end_time == T1
    assert statuses(wf) == {"a": S.CANCELED, "b": S.CANCELED, "c": S.NOT_STARTED}
    assert task_of(wf, "a").status is S.CANCELED
    assert task_of(wf, "a").end_time == T1
    assert task_of(wf, "b").status is S.CANCELED
    assert fx.drop_messages
    assert fx.workflow_changed
    assert fx.messages == []
    assert event_types(fx) == ["stage.canceled", "stage.canceled", "workflow.canceled"]
    assert wf.index.active == set()
    assert wf.error is None


def test_cancel_cancels_suspended_and_paused_work() -> None:
    wf = started(make_stage("a"), make_stage("b"))
    finish(wf, "a", TaskOutcome(S.SUSPENDED))
    pause_workflow(wf, T1)
    prepare_task(wf, wf.stage_by_ref_id("b").id, task_of(wf, "b").id, T1)
    assert task_of(wf, "b").status is S.PAUSED
    cancel_workflow(wf, None, None, T2)
    assert status_of(wf) is S.CANCELED
    assert task_of(wf, "a").status is S.CANCELED
    assert task_of(wf, "b").status is S.CANCELED
    assert statuses(wf) == {"a": S.CANCELED, "b": S.CANCELED}


def test_cancel_a_not_started_workflow() -> None:
    wf = make_workflow(make_stage("a"))
    fx = cancel_workflow(wf, "ann", None, T0)
    assert status_of(wf) is S.CANCELED
    assert statuses(wf) == {"a": S.NOT_STARTED}
    assert fx.drop_messages
    # and it can no longer start
    assert start_workflow(wf, T1).stale


def test_cancel_a_finished_workflow_is_stale() -> None:
    wf = started(make_stage("a"))
    finish(wf, "a")
    assert status_of(wf) is S.SUCCEEDED
    assert_nothing_happened(cancel_workflow(wf, "ann", "late", T2))
    assert status_of(wf) is S.SUCCEEDED
    assert not wf.is_canceled


# --- pause / resume ---------------------------------------------------------------------------


def test_pause_parks_a_task_and_resume_requeues_it() -> None:
    wf = started(make_stage("a"))
    a = wf.stage_by_ref_id("a")
    t1 = task_of(wf, "a")
    fx = pause_workflow(wf, T1)
    assert status_of(wf) is S.PAUSED
    assert wf.paused
    assert fx.workflow_changed
    assert event_types(fx) == ["workflow.paused"]

    parked = prepare_task(wf, a.id, t1.id, T1)
    assert parked is not None
    assert not parked.stale
    assert t1.status is S.PAUSED
    assert set(parked.stages) == {a.id}
    assert event_types(parked) == ["task.paused"]
    assert parked.events[0].entity_id == t1.id
    assert parked.messages == []

    fx_resume = resume_workflow(wf, T2)
    assert status_of(wf) is S.RUNNING
    assert wf.to_dict()["paused"] is False
    assert t1.to_dict()["status"] == "RUNNING"
    assert fx_resume.workflow_changed
    assert queued(wf, fx_resume) == [("a", "t1", 0)]
    assert event_types(fx_resume) == ["workflow.resumed"]
    assert prepare_task(wf, a.id, t1.id, T2) is None


def test_pause_and_resume_when_not_applicable_are_stale() -> None:
    wf = make_workflow(make_stage("a"))
    assert_nothing_happened(pause_workflow(wf, T0))
    wf = started(make_stage("a"))
    assert_nothing_happened(resume_workflow(wf, T1))
    pause_workflow(wf, T1)
    assert_nothing_happened(pause_workflow(wf, T1))


def test_task_finishing_while_paused_starts_the_next_task_which_is_then_parked() -> None:
    wf = started(make_stage("a", tasks=("t1", "t2")))
    pause_workflow(wf, T1)
    fx = finish(wf, "a")
    assert queued(wf, fx) == [("a", "t2", 0)]
    t2 = task_of(wf, "a", "t2")
    parked = prepare_task(wf, wf.stage_by_ref_id("a").id, t2.id, T1)
    assert parked is not None
    assert t2.status is S.PAUSED


def test_last_task_finishing_while_paused_completes_the_workflow_on_resume() -> None:
    wf = started(make_stage("a"))
    pause_workflow(wf, T1)
    fx = finish(wf, "a", now=T1)
    assert statuses(wf) == {"a": S.SUCCEEDED}
    assert status_of(wf) is S.PAUSED
    assert "workflow.completed" not in event_types(fx)
    fx_resume = resume_workflow(wf, T2)
    assert status_of(wf) is S.SUCCEEDED
    assert wf.end_time == T2
    assert event_types(fx_resume) == ["workflow.resumed", "workflow.completed"]


# --- mark_stage -------------------------------------------------------------------------------


def test_mark_stage_keeps_join_and_active_counters_in_step() -> None:
    wf = make_workflow(make_stage("a"), make_stage("b"), make_stage("j", ["a", "b"]))
    a = wf.stage_by_ref_id("a")
    index = wf.index
    fx = Effects()
    assert index.pending_upstream["j"] == 2
    mark_stage(wf, a, S.RUNNING, fx)
    assert a.status is S.RUNNING
    assert a.id in index.active
    assert index.pending_upstream["j"] == 2
    mark_stage(wf, a, S.SUCCEEDED, fx)
    assert a.id not in index.active
    assert index.pending_upstream["j"] == 1
    mark_stage(wf, a, S.SKIPPED, fx)  # complete -> complete: no change
    assert index.pending_upstream["j"] == 1
    mark_stage(wf, a, S.NOT_STARTED, fx)  # back to incomplete
    assert index.pending_upstream["j"] == 2


@pytest.mark.parametrize("status", [S.RUNNING, S.SUSPENDED, S.PAUSED], ids=str)
def test_mark_stage_active_statuses(status: WorkflowStatus) -> None:
    wf = make_workflow(make_stage("a"))
    a = wf.stages[0]
    fx = Effects()
    mark_stage(wf, a, status, fx)
    assert wf.index.active == {a.id}
    mark_stage(wf, a, S.CANCELED, fx)
    assert wf.index.active == set()


def test_a_stage_leaving_the_active_statuses_gives_up_its_mutex_through_the_effects() -> None:
    wf = make_workflow(make_stage("a"))
    a = wf.stages[0]
    a.mutex_key, a.mutex_held = "db", True
    fx = Effects()
    mark_stage(wf, a, S.RUNNING, fx)
    assert fx.released_mutexes == []
    mark_stage(wf, a, S.SUCCEEDED, fx)
    assert (a.mutex_held, fx.released_mutexes) == (False, [("db", a.id)])
    # The graph index cached on the workflow holds no state of the transition.
    assert not hasattr(wf.index, "mutex_released")


# --- determinism ------------------------------------------------------------------------------


def test_same_inputs_give_the_same_effects() -> None:
    def run() -> list[tuple[str, str, list[tuple[str, str, int]]]]:
        wf = make_workflow(
            make_stage("a"),
            make_stage("b", ["a"]),
            make_stage("c", ["a"]),
            make_stage("d", ["b", "c"]),
        )
        trace = []
        fx = start_workflow(wf, T0)
        trace.append(("start", ",".join(event_types(fx)), queued(wf, fx)))
        for ref in ("a", "c", "b", "d"):
            fx = finish(wf, ref)
            trace.append((ref, ",".join(event_types(fx)), queued(wf, fx)))
        return trace

    assert run() == run()
