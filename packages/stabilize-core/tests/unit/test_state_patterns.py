"""State-based patterns in the pure transitions: signals, deferred choice, milestones, mutexes,
stage deadlines, single-stage and region cancellation, dynamic fan-out and structured loops.

Workflows are built with ``Workflow.create`` and driven by hand with the transitions the
processor and the orchestrator call, with a fixed, increasing ``now``. Every effect is kept
so the tests can check the events and messages each step produced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import pytest

from stabilize import (
    InvalidStageGraphError,
    JoinType,
    MultiInstanceConfig,
    SignalError,
    StageExecution,
    TaskExecution,
    Workflow,
    WorkflowStatus,
    repeat_until,
    while_loop,
)
from stabilize.engine.messages import (
    ACQUIRE_MUTEX,
    RELEASE_MUTEX,
    RUN_TASK,
    STAGE_DEADLINE,
    Effects,
    EventDraft,
    Message,
)
from stabilize.engine.transitions import (
    TaskOutcome,
    cancel_stages,
    cancel_workflow,
    complete_task,
    mutex_granted,
    region_refs,
    signal_stage,
    stage_deadline,
    start_workflow,
)
from stabilize.expressions import ExpressionError
from stabilize.loops import LOOP_TASK
from stabilize.models.graph import GraphIndex
from stabilize.models.loop import LoopConfig

S = WorkflowStatus


def stage(
    ref: str,
    requires: Iterable[str] = (),
    *,
    task: str = "noop",
    tasks: Sequence[str] = ("t1",),
    context: dict[str, Any] | None = None,
    **flow: Any,
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=set(requires),
        context=dict(context or {}),
        tasks=[TaskExecution.create(name, task) for name in tasks],
        **flow,
    )


class Run:
    """A workflow driven by hand; keeps every effect the transitions returned."""

    def __init__(
        self, *stages: StageExecution, context: dict[str, Any] | None = None, start: bool = True
    ) -> None:
        self.wf = Workflow.create("app", "patterns", list(stages), context=context)
        self.effects: list[Effects] = []
        self.now = 1_000
        if start:
            self.keep(start_workflow(self.wf, self.now))

    def tick(self) -> int:
        self.now += 1_000
        return self.now

    def keep(self, fx: Effects) -> Effects:
        self.effects.append(fx)
        return fx

    def __getitem__(self, ref: str) -> StageExecution:
        return self.wf.stage_by_ref_id(ref)

    def running_task(self, ref: str) -> TaskExecution:
        return next(t for t in self[ref].tasks if t.status is S.RUNNING)

    def finish(
        self,
        ref: str,
        status: WorkflowStatus = S.SUCCEEDED,
        outputs: dict[str, Any] | None = None,
        **outcome: Any,
    ) -> Effects:
        """Complete the running task of stage ``ref``; it must not be stale."""
        s = self[ref]
        task = self.running_task(ref)
        fx = complete_task(
            self.wf,
            s.id,
            task.id,
            TaskOutcome(status, outputs=dict(outputs or {}), **outcome),
            self.tick(),
            task.version,
        )
        assert not fx.stale, f"completing {ref} was stale"
        return self.keep(fx)

    def suspend(self, ref: str) -> Effects:
        return self.finish(ref, S.SUSPENDED)

    def signal(
        self, ref: str, name: str = "go", data: dict[str, Any] | None = None, **kw: Any
    ) -> Effects:
        return self.keep(signal_stage(self.wf, self[ref].id, name, data, self.tick(), **kw))

    def st(self, ref: str) -> WorkflowStatus:
        """The status of stage ``ref`` (a call, so that mypy does not narrow it)."""
        return self[ref].status

    def wf_status(self) -> WorkflowStatus:
        return self.wf.status

    def held(self, ref: str) -> bool:
        """Whether stage ``ref`` holds its mutex (a call, so that mypy does not narrow it)."""
        return self[ref].mutex_held

    def status(self) -> dict[str, tuple[str, str | None]]:
        return {s.ref_id: (s.status.value, s.status_reason) for s in self.wf.stages}

    def events(self, kind: str | None = None) -> list[EventDraft]:
        return [e for fx in self.effects for e in fx.events if kind is None or e.event_type == kind]

    def messages(self, kind: str, fx: Effects | None = None) -> list[Message]:
        source = [fx] if fx is not None else self.effects
        return [m for f in source for m in f.messages if m.kind == kind]


def task_status(task: TaskExecution) -> WorkflowStatus:
    """A task's status (a call, so that mypy does not narrow it)."""
    return task.status


def reload(wf: Workflow) -> Workflow:
    """A fresh copy of ``wf`` as a database load would build it (no in-memory index state)."""
    stages = [StageExecution.from_dict(s.to_dict()) for s in wf.stages]
    return Workflow.from_dict(wf.to_dict(), stages, wf.version)


# -- signals -----------------------------------------------------------------------------


def test_signal_to_a_suspended_stage_resumes_its_task() -> None:
    run = Run(stage("a", task="wait_for_signal"), stage("b", ["a"]))
    run.suspend("a")
    assert run.st("a") is S.SUSPENDED
    task = run["a"].tasks[0]
    assert task_status(task) is S.SUSPENDED
    version = task.version

    fx = run.signal("a", "approve", {"ok": True}, user="alice")

    assert not fx.stale
    assert task_status(task) is S.RUNNING
    assert task.version == version + 1
    assert run.st("a") is S.RUNNING
    ctx = run["a"].context
    assert ctx["_signal_name"] == "approve"
    assert ctx["_signal_data"] == {"ok": True}
    assert run["a"].signal_user == "alice"
    assert "_signal_user" not in ctx  # the sender is the engine's, not the context's
    resumed = [e for e in fx.events if e.event_type == "stage.resumed"]
    assert len(resumed) == 1
    assert resumed[0].entity_id == run["a"].id
    assert resumed[0].data["signal"] == "approve"
    assert resumed[0].data["data"] == {"ok": True}
    assert resumed[0].data["user"] == "alice"
    [msg] = run.messages(RUN_TASK, fx)
    assert (msg.stage_id, msg.task_id, msg.payload["run"]) == (run["a"].id, task.id, task.version)
    assert run["a"].id in fx.stages

    run.finish("a", outputs={"signal": "approve"})
    run.finish("b")
    assert run.wf_status() is S.SUCCEEDED


def test_signal_may_name_the_stage_by_ref_id() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    run.suspend("a")
    fx = run.keep(signal_stage(run.wf, "a", "go", None, run.tick()))
    assert run.st("a") is S.RUNNING
    assert run["a"].context["_signal_data"] == {}
    assert len(run.messages(RUN_TASK, fx)) == 1


def test_early_persistent_signal_is_kept_and_delivered_when_the_task_suspends() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    assert run.st("a") is S.RUNNING  # the task runs and has not suspended yet

    fx = run.signal("a", "early", {"n": 1}, user="bob")

    assert run.st("a") is S.RUNNING
    assert run["a"].pending_signals == [
        {"name": "early", "data": {"n": 1}, "user": "bob", "at": run.now}
    ]
    assert [e.event_type for e in fx.events] == ["signal.queued"]
    assert run.messages(RUN_TASK, fx) == []
    assert "_signal_name" not in run["a"].context

    task = run.running_task("a")
    version = task.version
    fx = run.suspend("a")

    # It never stays SUSPENDED: the kept signal resumes it in the same transition.
    assert run.st("a") is S.RUNNING
    assert task.status is S.RUNNING
    assert task.version == version + 1
    assert run["a"].pending_signals == []
    assert run["a"].context["_signal_name"] == "early"
    assert run["a"].context["_signal_data"] == {"n": 1}
    assert run["a"].signal_user == "bob"
    assert "_signal_user" not in run["a"].context
    kinds = [e.event_type for e in fx.events]
    assert kinds.index("stage.suspended") < kinds.index("stage.resumed")
    [msg] = run.messages(RUN_TASK, fx)
    assert msg.payload["run"] == task.version


def test_persistent_signal_to_a_stage_not_started_yet_is_kept() -> None:
    run = Run(stage("pre"), stage("a", ["pre"], task="wait_for_signal"))
    assert run.st("a") is S.NOT_STARTED
    run.signal("a", "early")
    assert [s["name"] for s in run["a"].pending_signals] == ["early"]
    run.finish("pre")
    assert run.st("a") is S.RUNNING
    run.suspend("a")
    assert run.st("a") is S.RUNNING
    assert run["a"].context["_signal_name"] == "early"
    run.finish("a")
    assert run.wf_status() is S.SUCCEEDED


def test_second_pending_signal_waits_for_the_next_suspension() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    run.signal("a", "one")
    run.signal("a", "two")
    run.suspend("a")
    assert run["a"].context["_signal_name"] == "one"
    assert [s["name"] for s in run["a"].pending_signals] == ["two"]
    run.suspend("a")
    assert run["a"].context["_signal_name"] == "two"
    assert run["a"].pending_signals == []


def test_non_persistent_signal_to_a_stage_that_is_not_waiting_is_refused() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    with pytest.raises(SignalError, match="not waiting for a signal"):
        signal_stage(run.wf, run["a"].id, "go", None, run.tick(), persistent=False)
    assert run["a"].pending_signals == []
    assert run.st("a") is S.RUNNING


def test_non_persistent_signal_to_a_suspended_stage_is_delivered() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    run.suspend("a")
    run.signal("a", "now", persistent=False)
    assert run.st("a") is S.RUNNING
    assert run["a"].context["_signal_name"] == "now"


def test_signal_to_a_finished_stage_is_refused() -> None:
    run = Run(stage("a"), stage("b", ["a"], task="wait_for_signal"))
    run.finish("a")
    with pytest.raises(SignalError, match="SUCCEEDED"):
        signal_stage(run.wf, run["a"].id, "go", None, run.tick())
    assert run["a"].pending_signals == []


def test_signal_to_an_unknown_stage_is_refused() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    with pytest.raises(SignalError, match="nope"):
        signal_stage(run.wf, "nope", "go", None, run.tick())


def test_signal_to_a_stage_of_a_canceled_workflow_is_refused() -> None:
    run = Run(stage("a", task="wait_for_signal"))
    run.suspend("a")
    run.keep(cancel_workflow(run.wf, "u", "stop", run.tick()))
    with pytest.raises(SignalError, match="CANCELED"):
        signal_stage(run.wf, run["a"].id, "go", None, run.tick())


# -- deferred choice ---------------------------------------------------------------------


def choice() -> Run:
    """Two waiting branches a and b in group g, each with a follower, joined by j."""
    return Run(
        stage("a", task="wait_for_signal", deferred_choice_group="g"),
        stage("b", task="wait_for_signal", deferred_choice_group="g"),
        stage("a2", ["a"]),
        stage("b2", ["b"]),
        stage("j", ["a2", "b2"]),
    )


def test_deferred_choice_first_signal_wins_and_the_rivals_are_withdrawn() -> None:
    run = choice()
    run.suspend("a")
    run.suspend("b")

    fx = run.signal("b", "pick")

    assert run.st("b") is S.RUNNING
    assert run.st("a") is S.CANCELED
    assert run["a"].status_reason == "withdrawn"
    assert run["a"].tasks[0].status is S.CANCELED
    made = [e for e in fx.events if e.event_type == "choice.made"]
    assert len(made) == 1
    assert made[0].entity_id == run["b"].id
    assert made[0].data == {"group": "g", "chosen": "b"}
    # The loser's path is dead; the join waits for the winner's path only.
    assert run.st("a2") is S.SKIPPED
    assert run["a2"].status_reason == "branch_not_taken"
    assert run.st("j") is S.NOT_STARTED
    assert run.wf_status() is S.RUNNING

    with pytest.raises(SignalError):
        signal_stage(run.wf, run["a"].id, "late", None, run.tick())

    run.finish("b")
    run.finish("b2")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert run.status() == {
        "a": ("CANCELED", "withdrawn"),
        "b": ("SUCCEEDED", None),
        "a2": ("SKIPPED", "branch_not_taken"),
        "b2": ("SUCCEEDED", None),
        "j": ("SUCCEEDED", None),
    }
    assert len(run.events("choice.made")) == 1


def test_deferred_choice_withdraws_a_rival_that_has_not_started() -> None:
    run = Run(
        stage("a", task="wait_for_signal", deferred_choice_group="g"),
        stage("pre"),
        stage("c", ["pre"], task="wait_for_signal", deferred_choice_group="g"),
        stage("after_c", ["c"]),
    )
    run.suspend("a")
    run.signal("a")
    assert run.status()["c"] == ("SKIPPED", "withdrawn")
    run.finish("pre")
    assert run.st("c") is S.SKIPPED  # finishing its requisite does not revive it
    assert run.status()["after_c"] == ("SKIPPED", "branch_not_taken")
    run.finish("a")
    assert run.wf_status() is S.SUCCEEDED


def test_deferred_choice_early_signal_on_one_branch_wins_when_it_suspends() -> None:
    run = choice()
    run.signal("a", "early")  # a is still running: kept
    assert run.status()["b"] == ("BUFFERED", "waiting_for_choice")  # a's task runs first
    run.suspend("a")  # the kept signal is delivered: a wins now, before b ever ran
    assert run.st("a") is S.RUNNING
    assert run.status()["b"] == ("SKIPPED", "withdrawn")
    assert run["b"].tasks[0].status is S.NOT_STARTED
    assert run.status()["b2"] == ("SKIPPED", "branch_not_taken")


def test_deferred_choice_of_ordinary_tasks_runs_only_the_first_to_start() -> None:
    # Issue 14: both branches used to run and the loser was canceled after the fact.
    run = Run(
        stage("a", deferred_choice_group="g"),
        stage("b", deferred_choice_group="g"),
        stage("c", deferred_choice_group="g"),
        stage("j", ["a", "b", "c"], join_type=JoinType.OR),
    )
    started = [
        e.entity_id for fx in run.effects for e in fx.events if e.event_type == "task.started"
    ]
    assert started == [run["a"].tasks[0].id]  # the rivals' tasks were never started
    assert run.status()["b"] == ("BUFFERED", "waiting_for_choice")
    assert run.status()["c"] == ("BUFFERED", "waiting_for_choice")
    fx = run.finish("a", outputs={"via": "a"})
    assert [e.data for e in fx.events if e.event_type == "choice.made"] == [
        {"group": "g", "chosen": "a"}
    ]
    for rival in ("b", "c"):
        assert run.status()[rival] == ("SKIPPED", "withdrawn")
        assert run[rival].tasks[0].status is S.NOT_STARTED
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED


def test_deferred_choice_a_suspending_member_lets_the_next_one_start() -> None:
    run = Run(
        stage("wait", task="wait_for_signal", deferred_choice_group="g"),
        stage("work", deferred_choice_group="g"),
    )
    assert run.status()["work"] == ("BUFFERED", "waiting_for_choice")
    run.suspend("wait")  # no choice yet: the next member's task may run
    assert run.st("work") is S.RUNNING
    run.finish("work")  # it completes first: it is the choice
    assert run.status()["wait"] == ("CANCELED", "withdrawn")
    assert run.wf_status() is S.SUCCEEDED


# -- milestone ---------------------------------------------------------------------------


def test_milestone_stage_runs_while_the_milestone_is_in_its_state() -> None:
    run = Run(stage("m"), stage("p"), stage("x", ["p"], milestone_ref_id="m"))
    assert run.st("m") is S.RUNNING
    run.finish("p")
    assert run.st("x") is S.RUNNING
    run.finish("x")
    run.finish("m")
    assert run.wf_status() is S.SUCCEEDED


def test_milestone_stage_waits_before_and_starts_when_the_milestone_reaches_the_state() -> None:
    run = Run(
        stage("x", milestone_ref_id="m", milestone_status=S.SUSPENDED),
        stage("m", task="wait_for_signal"),
    )
    assert run.st("m") is S.RUNNING
    assert run.st("x") is S.NOT_STARTED
    assert run.wf_status() is S.RUNNING

    fx = run.suspend("m")  # a later transition: m reaches SUSPENDED

    assert run.st("x") is S.RUNNING
    assert [m.stage_id for m in run.messages(RUN_TASK, fx)] == [run["x"].id]
    run.finish("x")
    run.signal("m")
    run.finish("m")
    assert run.wf_status() is S.SUCCEEDED
    assert run.status()["x"] == ("SUCCEEDED", None)


def test_milestone_stage_is_skipped_once_the_milestone_has_finished() -> None:
    run = Run(stage("m"), stage("p"), stage("x", ["p"], milestone_ref_id="m"), stage("y", ["x"]))
    run.finish("m")
    assert run.wf_status() is S.RUNNING
    run.finish("p")
    assert run.status()["x"] == ("SKIPPED", "milestone_passed")
    # A milestone that passed is not a dead path: what follows still runs.
    assert run.st("y") is S.RUNNING
    run.finish("y")
    assert run.wf_status() is S.SUCCEEDED


def test_waiting_milestone_stage_is_skipped_when_the_milestone_ends_without_the_state() -> None:
    run = Run(
        stage("x", milestone_ref_id="m", milestone_status=S.SUSPENDED),
        stage("m"),
    )
    assert run.st("x") is S.NOT_STARTED
    run.finish("m")  # m never suspended
    assert run.status()["x"] == ("SKIPPED", "milestone_passed")
    assert run.wf_status() is S.SUCCEEDED


def test_waiting_milestone_stage_starts_after_the_workflow_is_reloaded() -> None:
    """A stage waiting for its milestone must not be forgotten when another worker (or a
    restarted one) loads the workflow from the database before the milestone moves."""
    run = Run(
        stage("x", milestone_ref_id="m", milestone_status=S.SUSPENDED),
        stage("m", task="wait_for_signal"),
    )
    assert run.st("x") is S.NOT_STARTED
    wf = reload(run.wf)
    m = wf.stage_by_ref_id("m")
    task = m.tasks[0]
    complete_task(wf, m.id, task.id, TaskOutcome(S.SUSPENDED), run.tick(), task.version)
    assert wf.stage_by_ref_id("x").status is S.RUNNING


@pytest.mark.parametrize("bad", ["nope", "x"], ids=["unknown", "itself"])
def test_bad_milestone_ref_id_is_refused(bad: str) -> None:
    with pytest.raises(InvalidStageGraphError) as err:
        Workflow.create("app", "wf", [stage("m"), stage("x", milestone_ref_id=bad)])
    assert err.value.kind == "bad_milestone"
    assert "x" in str(err.value)


# -- mutex -------------------------------------------------------------------------------


def test_stage_with_a_mutex_key_waits_buffered_for_the_mutex() -> None:
    run = Run(stage("a", mutex_key="db"))
    fx = run.effects[0]
    assert run.st("a") is S.BUFFERED
    assert run["a"].status_reason == "waiting_for_mutex"
    assert run.messages(RUN_TASK, fx) == []
    [acquire] = run.messages(ACQUIRE_MUTEX, fx)
    assert (acquire.workflow_id, acquire.stage_id, acquire.payload) == (
        run.wf.id,
        run["a"].id,
        {"key": "db"},
    )
    assert [e.data.get("mutex_key") for e in fx.events if e.event_type == "stage.buffered"] == [
        "db"
    ]
    assert run.wf_status() is S.RUNNING  # a buffered stage keeps the workflow alive


def test_mutex_grant_starts_the_stage_and_its_completion_releases_the_mutex() -> None:
    run = Run(stage("a", mutex_key="db"), stage("b", ["a"]))
    fx = run.keep(mutex_granted(run.wf, run["a"].id, run.tick()))
    assert not fx.stale
    assert run.st("a") is S.RUNNING
    assert run.held("a")
    assert run["a"].status_reason is None
    assert [m.stage_id for m in run.messages(RUN_TASK, fx)] == [run["a"].id]
    assert run.messages(RELEASE_MUTEX, fx) == []

    fx = run.finish("a")

    [release] = run.messages(RELEASE_MUTEX, fx)
    assert (release.workflow_id, release.stage_id, release.payload) == (
        run.wf.id,
        run["a"].id,
        {"key": "db"},
    )
    assert not run.held("a")
    assert run.st("b") is S.RUNNING
    run.finish("b")
    assert run.wf_status() is S.SUCCEEDED
    assert len(run.messages(RELEASE_MUTEX)) == 1


def test_mutex_is_released_when_its_holder_fails() -> None:
    run = Run(stage("a", mutex_key="db"))
    run.keep(mutex_granted(run.wf, run["a"].id, run.tick()))
    fx = run.finish("a", S.TERMINAL, error="boom")
    assert [m.payload for m in run.messages(RELEASE_MUTEX, fx)] == [{"key": "db"}]
    assert run.wf_status() is S.TERMINAL


def test_mutex_is_released_when_the_workflow_of_its_holder_is_canceled() -> None:
    run = Run(stage("a", mutex_key="db"))
    run.keep(mutex_granted(run.wf, run["a"].id, run.tick()))
    fx = run.keep(cancel_workflow(run.wf, "u", "stop", run.tick()))
    assert [(m.stage_id, m.payload) for m in run.messages(RELEASE_MUTEX, fx)] == [
        (run["a"].id, {"key": "db"})
    ]


def test_stale_mutex_grant_gives_the_mutex_back() -> None:
    run = Run(stage("a", mutex_key="db"))
    run.keep(cancel_workflow(run.wf, "u", "stop", run.tick()))
    assert run.st("a") is S.CANCELED
    fx = run.keep(mutex_granted(run.wf, run["a"].id, run.tick()))
    assert fx.stale
    assert run.messages(RUN_TASK, fx) == []
    assert [(m.stage_id, m.payload) for m in run.messages(RELEASE_MUTEX, fx)] == [
        (run["a"].id, {"key": "db"})
    ]
    assert run.st("a") is S.CANCELED


# -- stage deadline ----------------------------------------------------------------------


def test_stage_start_schedules_its_deadline() -> None:
    run = Run(stage("a", deadline_seconds=2.5))
    [msg] = run.messages(STAGE_DEADLINE, run.effects[0])
    assert (msg.stage_id, msg.payload, msg.delay_ms) == (run["a"].id, {"started": 1_000}, 2_500)


def test_stage_deadline_ends_a_running_stage_terminal() -> None:
    run = Run(stage("a", deadline_seconds=5), stage("b", ["a"]))
    started = run["a"].start_time
    assert started is not None
    fx = run.keep(stage_deadline(run.wf, run["a"].id, started, run.tick()))
    assert not fx.stale
    assert run.st("a") is S.TERMINAL
    assert run["a"].tasks[0].status is S.CANCELED
    assert run.wf_status() is S.TERMINAL
    assert run.wf.error is not None
    assert "exceeded its deadline of 5s" in run.wf.error
    assert "'a'" in run.wf.error
    assert [e.data["route"] for e in fx.events if e.event_type == "stage.deadline"] == [None]
    assert run.st("b") is S.NOT_STARTED
    assert fx.drop_messages


def test_stage_deadline_ends_a_suspended_stage_terminal() -> None:
    run = Run(stage("a", task="wait_for_signal", deadline_seconds=1))
    run.suspend("a")
    started = run["a"].start_time
    assert started is not None
    run.keep(stage_deadline(run.wf, run["a"].id, started, run.tick()))
    assert run.st("a") is S.TERMINAL
    assert run.wf_status() is S.TERMINAL
    with pytest.raises(SignalError):
        signal_stage(run.wf, run["a"].id, "late", None, run.tick())


def test_stage_deadline_routes_forward_and_skips_the_stages_between() -> None:
    run = Run(
        stage("a", deadline_seconds=1, deadline_route="c"),
        stage("b", ["a"]),
        stage("c", ["b"]),
    )
    started = run["a"].start_time
    assert started is not None
    fx = run.keep(stage_deadline(run.wf, run["a"].id, started, run.tick()))
    assert not fx.stale
    assert run.status() == {
        "a": ("SUCCEEDED", "deadline_routed"),
        "b": ("SKIPPED", None),
        "c": ("RUNNING", None),
    }
    assert [e.data["route"] for e in fx.events if e.event_type == "stage.deadline"] == ["c"]
    run.finish("c")
    assert run.wf_status() is S.SUCCEEDED


def test_stage_deadline_is_stale_once_the_stage_restarted() -> None:
    run = Run(stage("a", deadline_seconds=1))
    started = run["a"].start_time
    assert started is not None
    # A plain redirect restarts the stage's tasks; a jump to itself restarts the stage.
    run.finish("a", S.REDIRECT, target_stage_ref_id="a")
    assert run.st("a") is S.RUNNING
    assert run["a"].start_time != started
    fx = run.keep(stage_deadline(run.wf, run["a"].id, started, run.tick()))
    assert fx.stale
    assert run.st("a") is S.RUNNING
    assert run.wf_status() is S.RUNNING


def test_stage_deadline_is_stale_once_the_stage_finished() -> None:
    run = Run(stage("a", deadline_seconds=1), stage("b", ["a"]))
    started = run["a"].start_time
    assert started is not None
    run.finish("a")
    fx = run.keep(stage_deadline(run.wf, run["a"].id, started, run.tick()))
    assert fx.stale
    assert run.st("a") is S.SUCCEEDED
    assert run.st("b") is S.RUNNING


# -- cancel a stage or a region ----------------------------------------------------------


def test_canceled_stage_is_a_dead_path_and_a_join_with_a_live_requisite_proceeds() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("b2", ["b"]),
        stage("c", ["a"]),
        stage("j", ["b2", "c"]),
    )
    run.finish("a")
    fx = run.keep(cancel_stages(run.wf, ["b"], "ops", "not needed", run.tick()))
    assert run.status()["b"] == ("CANCELED", "canceled")
    assert run["b"].tasks[0].status is S.CANCELED
    assert run.status()["b2"] == ("SKIPPED", "branch_not_taken")
    canceled = [e for e in fx.events if e.event_type == "stage.canceled"]
    assert [(e.entity_id, e.data["user"], e.data["note"]) for e in canceled] == [
        (run["b"].id, "ops", "not needed")
    ]
    assert not fx.drop_messages
    assert run.wf_status() is S.RUNNING
    run.finish("c")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED


def test_canceling_the_last_running_stage_ends_the_workflow_succeeded() -> None:
    run = Run(stage("a"), stage("b", ["a"]))
    run.keep(cancel_stages(run.wf, ["a"], None, None, run.tick()))
    assert run.status() == {"a": ("CANCELED", "canceled"), "b": ("SKIPPED", "branch_not_taken")}
    assert run.wf_status() is S.SUCCEEDED


def test_cancel_region_cancels_running_and_unstarted_stages_of_the_region() -> None:
    run = Run(
        stage("a"),
        stage("r1", ["a"], cancel_region="optional"),
        stage("r2", ["r1"], cancel_region="optional"),
        stage("m", ["a"]),
        stage("j", ["r2", "m"]),
    )
    assert region_refs(run.wf, "optional") == ["r1", "r2"]
    assert region_refs(run.wf, "none") == []
    run.finish("a")
    run.keep(cancel_stages(run.wf, region_refs(run.wf, "optional"), "u", None, run.tick()))
    assert run.status()["r1"] == ("CANCELED", "canceled")
    assert run.status()["r2"] == ("CANCELED", "canceled")
    assert run.st("j") is S.NOT_STARTED
    run.finish("m")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED


def test_cancel_stages_ignores_finished_stages_and_is_stale_on_a_finished_workflow() -> None:
    run = Run(stage("a"), stage("b", ["a"]))
    run.finish("a")
    run.keep(cancel_stages(run.wf, ["a"], None, None, run.tick()))
    assert run.st("a") is S.SUCCEEDED
    run.finish("b")
    assert run.wf_status() is S.SUCCEEDED
    assert cancel_stages(run.wf, ["b"], None, None, run.tick()).stale


def test_canceling_a_stage_running_a_sub_workflow_cancels_the_child() -> None:
    run = Run(stage("a", task="sub_workflow"))
    task = run.running_task("a")
    complete_task(
        run.wf,
        run["a"].id,
        task.id,
        TaskOutcome(S.RUNNING, context={"_sub_workflow_id": "child-1"}),
        run.tick(),
        task.version,
    )
    fx = run.keep(cancel_stages(run.wf, ["a"], "u", None, run.tick()))
    cancels = [m for m in fx.messages if m.kind == "CancelWorkflow"]
    assert [m.workflow_id for m in cancels] == ["child-1"]


# -- dynamic fan-out (multi-instance) ----------------------------------------------------


def fan_out(items: Any, **config: Any) -> Run:
    return Run(
        stage(
            "f",
            context={"items": items, "shared": 1},
            mi_config=MultiInstanceConfig(items_key="items", **config),
        ),
        stage("after", ["f"]),
    )


def instances(run: Run) -> list[StageExecution]:
    return [s for s in run.wf.stages if s.parent_stage_id == run["f"].id]


def test_fan_out_creates_one_instance_per_item() -> None:
    run = fan_out(["x", "y", "z"], item_key="thing")
    fx = run.effects[0]
    made = instances(run)
    assert [s.ref_id for s in made] == ["f[0]", "f[1]", "f[2]"]
    assert [s.context["thing"] for s in made] == ["x", "y", "z"]
    assert [s.mi_index for s in made] == [0, 1, 2]
    assert all(
        s.context == {"items": ["x", "y", "z"], "shared": 1, "thing": t}
        for s, t in zip(made, "xyz", strict=True)
    )
    assert run["f"].mi_generation is not None
    assert all(s.id.startswith(f"{run['f'].mi_generation}.") for s in made)
    assert not any(k.startswith("_mi_") for s in [run["f"], *made] for k in s.context)
    assert [s.id for s in fx.new_stages] == [s.id for s in made]
    assert len({s.id for s in made}) == 3
    assert all(s.status is S.RUNNING for s in made)
    assert run.st("f") is S.RUNNING
    assert [e.data["instances"] for e in fx.events if e.event_type == "stage.expanded"] == [3]
    assert sorted(m.stage_id or "" for m in run.messages(RUN_TASK, fx)) == sorted(
        s.id for s in made
    )


def test_fan_out_respects_its_concurrency_limit() -> None:
    run = fan_out([1, 2, 3, 4, 5], max_concurrency=2)

    def running() -> list[str]:
        return [s.ref_id for s in instances(run) if s.status is S.RUNNING]

    assert running() == ["f[0]", "f[1]"]
    run.finish("f[1]")
    assert running() == ["f[0]", "f[2]"]
    run.finish("f[0]")
    assert running() == ["f[2]", "f[3]"]
    run.finish("f[3]")
    assert running() == ["f[2]", "f[4]"]
    run.finish("f[4]")
    assert running() == ["f[2]"]
    assert run.st("f") is S.RUNNING
    run.finish("f[2]")
    assert run.st("f") is S.SUCCEEDED


def test_fan_out_collects_instance_outputs_in_item_order() -> None:
    run = fan_out(["a", "b", "c"])
    for i in (2, 0, 1):
        run.finish(f"f[{i}]", outputs={"value": i * 10})
    assert run.st("f") is S.SUCCEEDED
    assert run["f"].outputs["instances"] == [{"value": 0}, {"value": 10}, {"value": 20}]
    assert run.st("after") is S.RUNNING
    assert run.wf.task_context(run["after"])["instances"] == [
        {"value": 0},
        {"value": 10},
        {"value": 20},
    ]
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED


def test_fan_out_applies_output_reducers_over_the_instances() -> None:
    run = Run(
        stage(
            "f",
            context={"items": [1, 2, 3]},
            mi_config=MultiInstanceConfig(items_key="items"),
            output_reducers={"value": "sum"},
        )
    )
    for i in range(3):
        run.finish(f"f[{i}]", outputs={"value": i + 1})
    assert run["f"].outputs["value"] == 6


def test_fan_out_k_of_n_cancels_running_instances() -> None:
    run = fan_out(["a", "b", "c", "d"], join_threshold=2)
    run.finish("f[3]", outputs={"v": 3})
    assert run.st("f") is S.RUNNING
    run.finish("f[1]", outputs={"v": 1})
    assert run.st("f") is S.SUCCEEDED
    assert [(s.ref_id, s.status, s.status_reason) for s in instances(run)] == [
        ("f[0]", S.CANCELED, "straggler"),
        ("f[1]", S.SUCCEEDED, None),
        ("f[2]", S.CANCELED, "straggler"),
        ("f[3]", S.SUCCEEDED, None),
    ]
    assert run["f"].outputs["instances"] == [None, {"v": 1}, None, {"v": 3}]
    assert run.st("after") is S.RUNNING
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED


def test_fan_out_k_of_n_withdraws_instances_not_started() -> None:
    run = fan_out(["a", "b", "c"], join_threshold=1, max_concurrency=1)
    run.finish("f[0]")
    assert [(s.status, s.status_reason) for s in instances(run)] == [
        (S.SUCCEEDED, None),
        (S.SKIPPED, "withdrawn"),
        (S.SKIPPED, "withdrawn"),
    ]
    assert run.st("f") is S.SUCCEEDED
    assert run.messages(RUN_TASK, run.effects[-1])[0].stage_id == run["after"].id


def test_fan_out_items_not_a_list_ends_the_stage_terminal_naming_the_key() -> None:
    run = fan_out({"not": "a list"})
    assert run.st("f") is S.TERMINAL
    assert run.wf_status() is S.TERMINAL
    assert run.wf.error is not None
    assert "'items'" in run.wf.error
    assert "dict" in run.wf.error
    assert instances(run) == []


def test_fan_out_missing_items_ends_the_stage_terminal() -> None:
    run = Run(stage("f", mi_config=MultiInstanceConfig(items_key="missing")))
    assert run.st("f") is S.TERMINAL
    assert run.wf.error is not None
    assert "'missing'" in run.wf.error


def test_fan_out_over_an_empty_list_succeeds_with_no_instances() -> None:
    run = fan_out([])
    assert run.st("f") is S.SUCCEEDED
    assert run["f"].outputs["instances"] == []
    assert instances(run) == []
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED


def test_fan_out_reads_its_items_from_an_upstream_output() -> None:
    run = Run(
        stage("src"),
        stage("f", ["src"], mi_config=MultiInstanceConfig(items_key="found")),
    )
    run.finish("src", outputs={"found": [7, 8]})
    assert [s.context["item"] for s in instances(run)] == [7, 8]


def test_fan_out_without_tasks_is_refused() -> None:
    bad = StageExecution(ref_id="f", mi_config=MultiInstanceConfig(items_key="items"))
    with pytest.raises(InvalidStageGraphError) as err:
        Workflow.create("app", "wf", [bad])
    assert err.value.kind == "bad_multi_instance"


# -- what an instance stores (issue 19) ----------------------------------------------------


def loaded(wf: Workflow, rows: list[dict[str, Any]] | None = None) -> Workflow:
    """``wf`` as a worker loads it: rebuilt from its stored rows (JSON)."""
    rows = rows if rows is not None else [s.to_row() for s in wf.stages]
    stages = [StageExecution.from_dict(json.loads(json.dumps(row))) for row in rows]
    return Workflow.from_dict(json.loads(json.dumps(wf.to_dict())), stages, wf.version)


def test_an_instance_row_holds_only_its_own_context_and_reads_as_before() -> None:
    items = [f"item-{i}" for i in range(5)]
    run = Run(
        stage("src"),
        stage(
            "f",
            ["src"],
            context={"items": items, "shared": "fan", "item": "the fan-out's"},
            mi_config=MultiInstanceConfig(items_key="items"),
        ),
    )
    run.finish("src", outputs={"shared": "upstream", "up": True})
    made = instances(run)
    assert [s.to_row()["context"] for s in made] == [{"item": item} for item in items]
    assert run["f"].to_row()["context"] == run["f"].context
    # What a task sees: ancestors' outputs, then the fan-out's context, then the item;
    # not the list of all items (issue 19: a copy per instance costs O(n) each).
    assert run.wf.task_context(made[2]) == {
        "up": True,
        "shared": "fan",
        "item": "item-2",
    }
    again = loaded(run.wf)
    for s in made:
        twin = again.stage_by_id(s.id)
        assert twin.context == s.context
        assert again.task_context(twin) == run.wf.task_context(s)
        assert twin.to_row()["context"] == {"item": s.context["item"]}
    # One list in memory, shared by every instance, not a copy each.
    fan = again.stage_by_ref_id("f")
    assert all(again.stage_by_id(s.id).context["items"] is fan.context["items"] for s in made)


def test_an_instance_keeps_what_its_tasks_set_even_when_equal_to_the_fan_outs() -> None:
    run = fan_out(["a", "b"], max_concurrency=1)
    run.finish("f[0]", context={"items": ["a", "b"], "shared": 2, "mine": 1})
    assert run["f[0]"].to_row()["context"] == {
        "item": "a",
        "items": ["a", "b"],
        "shared": 2,
        "mine": 1,
    }
    assert loaded(run.wf).stage_by_ref_id("f[0]").context == run["f[0]"].context
    # The fan-out's list stays out of an instance's task context; a list its own task
    # set (another one) is its own, and its next task sees it.
    assert "items" not in run.wf.task_context(run["f[0]"])
    run["f[1]"].context["items"] = ["mine"]
    assert run.wf.task_context(run["f[1]"])["items"] == ["mine"]


def test_instance_rows_of_earlier_versions_hold_a_copy_and_run_the_same() -> None:
    run = fan_out(["a", "b", "c"], max_concurrency=2)
    run.finish("f[0]", outputs={"v": 0})
    # Before issue 19 every instance row carried the fan-out's whole context.
    rows = [{**s.to_row(), "context": dict(s.context)} for s in run.wf.stages]
    old = loaded(run.wf, rows)
    for s in instances(run):
        twin = old.stage_by_id(s.id)
        assert twin.context == s.context
        assert old.task_context(twin) == run.wf.task_context(s)
        # Read as it is, not migrated: written again, the row still holds its copy.
        assert twin.to_row()["context"]["items"] == ["a", "b", "c"]
    run.wf = old
    assert [s.status for s in instances(run)] == [S.SUCCEEDED, S.RUNNING, S.RUNNING]
    run.finish("f[2]", outputs={"v": 2})
    run.finish("f[1]", outputs={"v": 1})
    assert run.st("f") is S.SUCCEEDED
    assert run["f"].outputs["instances"] == [{"v": 0}, {"v": 1}, {"v": 2}]


def counters(wf: Workflow, fan: StageExecution) -> tuple[int, int, int]:
    group = wf.index.instance_group(fan)
    assert group is not None
    return group.finished, group.succeeded, group.running


def test_a_wide_fan_out_keeps_its_limit_and_its_counters_match_a_recount() -> None:
    count = 300
    run = Run(
        stage(
            "f",
            context={"items": list(range(count))},
            mi_config=MultiInstanceConfig(items_key="items", max_concurrency=3),
            output_reducers={"v": "sum"},
        ),
        stage("after", ["f"]),
    )
    fan = run["f"]
    step = 0
    while run.st("f") is S.RUNNING:
        running = [s for s in instances(run) if s.status is S.RUNNING]
        assert 1 <= len(running) <= 3
        chosen = running[step % len(running)]  # not always the oldest
        status = S.FAILED_CONTINUE if chosen.mi_index == 7 else S.SUCCEEDED
        run.finish(chosen.ref_id, status, outputs={"v": chosen.mi_index})
        step += 1
        if step % 50 == 0:
            fresh = Workflow.from_dict(run.wf.to_dict(), run.wf.stages, run.wf.version)
            assert counters(run.wf, fan) == counters(fresh, fresh.stage_by_ref_id("f"))
    assert step == count
    assert counters(run.wf, fan) == (count, count, 0)
    assert run["f"].outputs["instances"] == [{"v": i} for i in range(count)]
    assert run["f"].outputs["v"] == sum(range(count))
    assert run.st("after") is S.RUNNING


def test_a_wide_fan_out_with_a_threshold_withdraws_the_rest_at_once() -> None:
    run = fan_out(list(range(200)), max_concurrency=4, join_threshold=150)
    while run.st("f") is S.RUNNING:
        oldest = next(s for s in instances(run) if s.status is S.RUNNING)
        run.finish(oldest.ref_id, outputs={"v": oldest.mi_index})
    assert run.st("f") is S.SUCCEEDED
    states = [s.status for s in instances(run)]
    assert states == [S.SUCCEEDED] * 150 + [S.CANCELED] * 3 + [S.SKIPPED] * 47
    assert run["f"].outputs["instances"] == [{"v": i} for i in range(150)] + [None] * 50


def test_an_instance_a_jump_restarts_counts_once_and_the_limit_holds() -> None:
    run = fan_out(["a", "b", "c", "d"], max_concurrency=2)
    run.finish("f[1]", S.REDIRECT, target_stage_ref_id="f[1]")  # it runs again
    assert [s.status for s in instances(run)] == [S.RUNNING, S.RUNNING] + [S.NOT_STARTED] * 2
    assert counters(run.wf, run["f"]) == (0, 0, 2)
    run.finish("f[1]")
    assert [s.status for s in instances(run)] == [S.RUNNING, S.SUCCEEDED, S.RUNNING, S.NOT_STARTED]
    for ref in ("f[0]", "f[2]", "f[3]"):
        run.finish(ref)
    assert run.st("f") is S.SUCCEEDED


def test_an_index_built_again_gives_the_same_instances_and_counters() -> None:
    run = fan_out(["a", "b", "c"], max_concurrency=1)
    run.finish("f[0]")
    before = counters(run.wf, run["f"])
    run.wf.invalidate_index()
    assert counters(run.wf, run["f"]) == before == (1, 1, 1)
    assert GraphIndex(run.wf.stages).instances(run["f"]) == instances(run)


# -- structured loops --------------------------------------------------------------------


def test_repeat_until_builds_the_body_and_a_check_stage() -> None:
    body = [stage("work"), stage("grade", ["work"])]
    stages = repeat_until(
        "loop", body, until="score >= 3", max_iterations=4, requisite_stage_ref_ids=["pre"]
    )
    assert [s.ref_id for s in stages] == ["work", "grade", "loop"]
    check = stages[-1]
    assert check.requisite_stage_ref_ids == {"grade"}
    assert stages[0].requisite_stage_ref_ids == {"pre"}
    assert [t.implementing_class for t in check.tasks] == [LOOP_TASK]
    assert check.loop == LoopConfig("until", "score >= 3", 4, "work", False)
    assert check.context == {}  # the loop's settings are the engine's, not the context's
    wf = Workflow.create("app", "wf", [stage("pre"), *stages], context={"_max_jumps": 2})
    assert wf.max_jumps() == 2 + 4


def test_while_loop_builds_a_guard_the_body_a_back_edge_and_an_exit() -> None:
    stages = while_loop(
        "w", [stage("step")], condition="n < 3", max_iterations=5, fail_when_exhausted=True
    )
    assert [s.ref_id for s in stages] == ["w", "step", "w_next", "w_done"]
    guard, step, back, done = stages
    assert guard.requisite_stage_ref_ids == set()
    assert step.requisite_stage_ref_ids == {"w"}
    assert back.requisite_stage_ref_ids == {"step"}
    assert done.requisite_stage_ref_ids == {"w_next"}
    assert guard.loop == LoopConfig("while", "n < 3", 5, "w_done", True)
    assert back.loop == LoopConfig("next", "true", 0, "w", False)
    assert guard.context == back.context == {}
    wf = Workflow.create("app", "wf", stages)
    assert wf.max_jumps() == 10 + 5


@pytest.mark.parametrize("helper", [repeat_until, while_loop])
@pytest.mark.parametrize(
    ("body", "max_iterations"),
    [
        pytest.param([], 3, id="empty-body"),
        pytest.param([stage("x")], 0, id="zero-iterations"),
        pytest.param([stage("x"), stage("y")], 3, id="two-entries"),
    ],
)
def test_loops_refuse_bad_bodies(
    helper: Any, body: list[StageExecution], max_iterations: int
) -> None:
    with pytest.raises(InvalidStageGraphError) as err:
        helper("loop", body, "done", max_iterations)
    assert err.value.kind == "bad_loop"
    assert "'loop'" in str(err.value)


def test_loops_refuse_a_bad_condition() -> None:
    with pytest.raises(ExpressionError):
        repeat_until("loop", [stage("x")], "__import__('os')", 3)


# -- fixes found while documenting -------------------------------------------------------


def test_canceling_a_fan_out_stage_cancels_its_instances() -> None:
    run = Run(
        stage("fan", mi_config=MultiInstanceConfig(items_key="items", max_concurrency=1)),
        context={"items": [1, 2, 3]},
    )
    assert [run[f"fan[{i}]"].status for i in range(3)] == [S.RUNNING, S.NOT_STARTED, S.NOT_STARTED]
    run.keep(cancel_stages(run.wf, ["fan"], "me", "stop", run.tick()))
    assert run.status()["fan"] == ("CANCELED", "canceled")
    assert run.status()["fan[0]"] == ("CANCELED", "canceled")
    assert run.status()["fan[1]"] == ("SKIPPED", "withdrawn")
    assert run.status()["fan[2]"] == ("SKIPPED", "withdrawn")
    assert run.wf_status() is S.SUCCEEDED  # nothing is left running


def test_a_fan_out_stage_gets_its_deadline() -> None:
    run = Run(
        stage("fan", mi_config=MultiInstanceConfig(items_key="items"), deadline_seconds=2.0),
        context={"items": [1]},
    )
    deadlines = run.messages(STAGE_DEADLINE)
    assert [(m.stage_id, m.delay_ms) for m in deadlines] == [(run["fan"].id, 2000)]


def test_a_straggler_failing_after_its_discriminator_fired_is_ignored() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("j", ["b", "c"], join_type=JoinType.DISCRIMINATOR),
    )
    run.finish("a")
    run.finish("b")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    run.finish("c", S.TERMINAL, error="late failure")
    assert run.status()["c"] == ("TERMINAL", "late_straggler")
    assert run.wf_status() is S.SUCCEEDED


def test_a_failing_branch_that_still_matters_fails_the_workflow() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("side", ["c"]),
        stage("j", ["b", "c"], join_type=JoinType.DISCRIMINATOR),
    )
    run.finish("a")
    run.finish("b")
    run.finish("c", S.TERMINAL, error="feeds side too")
    assert run.wf_status() is S.TERMINAL
