"""Control flow in the pure transitions: joins, splits, straggler policies, enable conditions.

Workflows are built with ``Workflow.create`` and driven with ``start_workflow`` and
``complete_task`` as the processor would, with a fixed ``now``; every effect is kept so the
tests can check the events and messages each step produced.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import pytest

from stabilize import InvalidStageGraphError
from stabilize.engine.messages import RUN_TASK, Effects, EventDraft
from stabilize.engine.transitions import TaskOutcome, complete_task, start_workflow
from stabilize.models import (
    JoinType,
    SplitType,
    StageExecution,
    StragglerPolicy,
    TaskExecution,
    Workflow,
    WorkflowStatus,
)

S = WorkflowStatus
J = JoinType


def stage(
    ref: str,
    requires: Iterable[str] = (),
    *,
    context: dict[str, Any] | None = None,
    **flow: Any,
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="test",
        name=ref,
        requisite_stage_ref_ids=set(requires),
        context=dict(context or {}),
        tasks=[TaskExecution.create("t1", "noop")],
        **flow,
    )


class Run:
    """A workflow driven by hand; keeps every effect the transitions returned."""

    def __init__(self, *stages: StageExecution, context: dict[str, Any] | None = None) -> None:
        self.wf = Workflow.create("app", "flow", list(stages), context=context)
        self.effects: list[Effects] = []
        self.now = 1_000
        self.keep(start_workflow(self.wf, self.now))

    def keep(self, fx: Effects) -> Effects:
        self.effects.append(fx)
        return fx

    def __getitem__(self, ref: str) -> StageExecution:
        return self.wf.stage_by_ref_id(ref)

    def finish(
        self,
        ref: str,
        outputs: dict[str, Any] | None = None,
        status: WorkflowStatus = S.SUCCEEDED,
        **outcome: Any,
    ) -> Effects:
        """Complete the running task of stage ``ref``; it must not be stale."""
        s = self[ref]
        task = next(t for t in s.tasks if t.status is S.RUNNING)
        self.now += 1_000
        fx = complete_task(
            self.wf,
            s.id,
            task.id,
            TaskOutcome(status, outputs=dict(outputs or {}), **outcome),
            self.now,
        )
        assert not fx.stale, f"completing {ref} was stale"
        return self.keep(fx)

    def st(self, ref: str) -> WorkflowStatus:
        """The status of stage ``ref`` (a call, so that mypy does not narrow it)."""
        return self[ref].status

    def wf_status(self) -> WorkflowStatus:
        return self.wf.status

    def status(self) -> dict[str, tuple[str, str | None]]:
        return {s.ref_id: (s.status.value, s.status_reason) for s in self.wf.stages}

    def events(self, kind: str | None = None) -> list[EventDraft]:
        return [e for fx in self.effects for e in fx.events if kind is None or e.event_type == kind]

    def events_of(self, kind: str, ref: str) -> list[EventDraft]:
        sid = self[ref].id
        return [e for e in self.events(kind) if e.entity_id == sid]

    def task_starts(self) -> Counter[str]:
        """How many times each stage's task was started (RunTask messages produced)."""
        by_id = {s.id: s.ref_id for s in self.wf.stages}
        return Counter(
            by_id[m.stage_id or ""]
            for fx in self.effects
            for m in fx.messages
            if m.kind == RUN_TASK
        )


# -- validation at Workflow.create -------------------------------------------------------


@pytest.mark.parametrize("threshold", [0, -1, 3])
def test_n_of_m_threshold_outside_1_to_n_is_refused(threshold: int) -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create(
            "app",
            "bad",
            [
                stage("a"),
                stage("b"),
                stage("j", ["a", "b"], join_type=J.N_OF_M, join_threshold=threshold),
            ],
        )
    assert info.value.kind == "bad_join_threshold"
    assert info.value.ref_id == "j"
    assert "join_threshold" in str(info.value)


@pytest.mark.parametrize("threshold", [1, 2])
def test_n_of_m_threshold_inside_1_to_n_is_accepted(threshold: int) -> None:
    Workflow.create(
        "app",
        "ok",
        [
            stage("a"),
            stage("b"),
            stage("j", ["a", "b"], join_type=J.N_OF_M, join_threshold=threshold),
        ],
    )


def test_split_conditions_need_split_type_or() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create(
            "app", "bad", [stage("s", split_conditions={"b": "true"}), stage("b", ["s"])]
        )
    assert info.value.kind == "bad_split_condition"
    assert info.value.ref_id == "s"


def test_split_conditions_must_name_children() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create(
            "app",
            "bad",
            [
                stage("s", split_type=SplitType.OR, split_conditions={"other": "true"}),
                stage("b", ["s"]),
                stage("other"),
            ],
        )
    assert info.value.kind == "bad_split_condition"
    assert "'other'" in str(info.value)


@pytest.mark.parametrize(
    "condition",
    ["x.y", "x ==", "__import__('os')", {"expression": "[i for i in x]"}, 3, None, ["x"]],
)
def test_invalid_split_condition_expressions_are_refused(condition: Any) -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create(
            "app",
            "bad",
            [
                stage("s", split_type=SplitType.OR, split_conditions={"b": condition}),
                stage("b", ["s"]),
            ],
        )
    assert info.value.kind == "bad_expression"
    assert info.value.ref_id == "s"


def test_invalid_stage_enabled_expression_is_refused() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        Workflow.create("app", "bad", [stage("a", context={"stageEnabled": "a.b"})])
    assert info.value.kind == "bad_expression"
    assert info.value.ref_id == "a"


# -- AND / OR joins and dead-path elimination --------------------------------------------


def test_and_join_waits_for_every_requisite() -> None:
    run = Run(stage("a"), stage("b"), stage("c"), stage("j", ["a", "b", "c"]))
    run.finish("a")
    run.finish("c")
    assert run.st("j") is S.NOT_STARTED
    run.finish("b")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED


def test_or_split_skips_the_branch_not_taken_and_the_or_join_waits_for_the_taken_one() -> None:
    run = Run(
        stage(
            "s", split_type=SplitType.OR, split_conditions={"b": "kind == 'b'", "c": "kind == 'c'"}
        ),
        stage("c", ["s"]),
        stage("b", ["s"]),
        stage("j", ["b", "c"], join_type=J.OR),
    )
    run.finish("s", {"kind": "c"})
    assert run["s"].branches_not_taken == ["b"]
    assert run.status()["b"] == ("SKIPPED", "branch_not_taken")
    assert run["b"].is_dead
    assert run.st("c") is S.RUNNING
    assert run.st("j") is S.NOT_STARTED
    skipped = run.events_of("stage.skipped", "b")
    assert [e.data["reason"] for e in skipped] == ["branch_not_taken"]
    run.finish("c")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts() == Counter({"s": 1, "c": 1, "j": 1})


def test_a_dead_path_propagates_until_a_join_with_a_live_edge() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b1": False}),
        stage("c", ["s"]),
        stage("b1", ["s"]),
        stage("b2", ["b1"]),
        stage("b3", ["b2"]),
        stage("j", ["b3", "c"]),  # AND join: the dead requisite counts as complete
        stage("after", ["j"]),
    )
    run.finish("s")
    for ref in ("b1", "b2", "b3"):
        assert run.status()[ref] == ("SKIPPED", "branch_not_taken")
    assert run.st("j") is S.NOT_STARTED
    run.finish("c")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED


def test_a_join_whose_incoming_edges_are_all_dead_is_skipped_with_its_descendants() -> None:
    run = Run(
        stage(
            "s", split_type=SplitType.OR, split_conditions={"b": "false", "c": "false", "d": True}
        ),
        stage("d", ["s"]),
        stage("b", ["s"]),
        stage("c", ["s"]),
        stage("j", ["b", "c"]),
        stage("after_j", ["j"]),
        stage("end", ["after_j", "d"]),
    )
    run.finish("s")
    assert run.status()["j"] == ("SKIPPED", "branch_not_taken")
    assert run.status()["after_j"] == ("SKIPPED", "branch_not_taken")
    assert run.st("end") is S.NOT_STARTED
    run.finish("d")
    run.finish("end")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts() == Counter({"s": 1, "d": 1, "end": 1})


def test_every_branch_not_taken_ends_the_workflow_succeeded() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "false"}),
        stage("b", ["s"]),
        stage("c", ["b"]),
    )
    fx = run.finish("s")
    assert run.status() == {
        "s": ("SUCCEEDED", None),
        "b": ("SKIPPED", "branch_not_taken"),
        "c": ("SKIPPED", "branch_not_taken"),
    }
    assert run.wf_status() is S.SUCCEEDED
    assert [e.event_type for e in fx.events].count("workflow.completed") == 1


def test_a_branch_not_taken_declared_before_a_taken_sibling_does_not_end_the_workflow() -> None:
    """The taken sibling must still run when the skipped one is considered first."""
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"x": "false"}),
        stage("x", ["s"]),
        stage("y", ["s"]),
    )
    run.finish("s")
    assert run.status()["x"] == ("SKIPPED", "branch_not_taken")
    assert run.st("y") is S.RUNNING
    assert run.wf_status() is S.RUNNING
    run.finish("y")
    assert run.wf_status() is S.SUCCEEDED


# -- conditional splits ------------------------------------------------------------------


def test_split_conditions_see_context_upstream_outputs_and_own_outputs() -> None:
    run = Run(
        stage("root"),
        stage(
            "s",
            ["root"],
            context={"limit": 5},
            split_type=SplitType.OR,
            split_conditions={
                "by_ctx": "limit == 5 and mode == 'fast'",
                "by_upstream": "seed > 100",
                "by_own": {"expression": "len(found) >= 2"},
                "by_bool": False,
            },
        ),
        stage("always", ["s"]),  # no condition: always taken
        stage("by_ctx", ["s"]),
        stage("by_upstream", ["s"]),
        stage("by_own", ["s"]),
        stage("by_bool", ["s"]),
        context={"mode": "fast"},
    )
    run.finish("root", {"seed": 7})
    run.finish("s", {"found": [1, 2]})
    assert run["s"].branches_not_taken == ["by_bool", "by_upstream"]
    status = run.status()
    for ref in ("always", "by_ctx", "by_own"):
        assert status[ref] == ("RUNNING", None)
    for ref in ("by_upstream", "by_bool"):
        assert status[ref] == ("SKIPPED", "branch_not_taken")


def test_failed_continue_splitting_stage_still_evaluates_its_conditions() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "ok"}),
        stage("c", ["s"]),
        stage("b", ["s"]),
    )
    run.finish("s", {"ok": False}, status=S.FAILED_CONTINUE)
    assert run.status()["b"] == ("SKIPPED", "branch_not_taken")
    assert run.st("c") is S.RUNNING


def test_split_condition_runtime_error_ends_the_stage_terminal_naming_it() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "missing > 1"}),
        stage("b", ["s"]),
    )
    run.finish("s")
    assert run.st("s") is S.TERMINAL
    assert run.st("b") is S.NOT_STARTED
    assert run.wf_status() is S.TERMINAL
    assert run.wf.error is not None
    assert "'s'" in run.wf.error
    assert "split condition" in run.wf.error
    assert "missing" in run.wf.error
    failed = run.events_of("stage.failed", "s")
    assert len(failed) == 1
    assert "split condition" in failed[0].data["error"]


# -- stage enable conditions -------------------------------------------------------------


@pytest.mark.parametrize(
    "enabled",
    [False, "false", "flag == 'off'", {"expression": "flag == 'off'"}, "seed < 0"],
)
def test_disabled_stage_is_skipped_and_downstream_still_runs(enabled: Any) -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"], context={"stageEnabled": enabled}),
        stage("c", ["b"]),
        context={"flag": "on"},
    )
    run.finish("a", {"seed": 3})
    assert run.status()["b"] == ("SKIPPED", "disabled")
    assert not run["b"].is_dead
    assert [e.data["reason"] for e in run.events_of("stage.skipped", "b")] == ["disabled"]
    assert run.st("c") is S.RUNNING
    run.finish("c")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts() == Counter({"a": 1, "c": 1})


@pytest.mark.parametrize(
    "enabled", [True, "true", "seed == 3", {"expression": "flag == 'on'"}, {"expression": True}]
)
def test_enabled_stage_runs(enabled: Any) -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"], context={"stageEnabled": enabled}),
        context={"flag": "on"},
    )
    run.finish("a", {"seed": 3})
    assert run.st("b") is S.RUNNING


def test_stage_enabled_error_at_run_time_ends_the_workflow_terminal() -> None:
    run = Run(stage("a"), stage("b", ["a"], context={"stageEnabled": "missing"}))
    run.finish("a")
    assert run.st("b") is S.TERMINAL
    assert run.wf_status() is S.TERMINAL
    assert run.wf.error is not None
    assert "stageEnabled" in run.wf.error
    assert "missing" in run.wf.error


def test_disabled_stage_declared_before_a_sibling_does_not_end_the_workflow() -> None:
    run = Run(stage("a"), stage("x", ["a"], context={"stageEnabled": False}), stage("y", ["a"]))
    run.finish("a")
    assert run.status()["x"] == ("SKIPPED", "disabled")
    assert run.st("y") is S.RUNNING
    assert run.wf_status() is S.RUNNING


def test_disabled_initial_stage_does_not_end_the_workflow_before_the_others_start() -> None:
    run = Run(stage("a", context={"stageEnabled": False}), stage("b"))
    assert run.status()["a"] == ("SKIPPED", "disabled")
    assert run.st("b") is S.RUNNING
    assert run.wf_status() is S.RUNNING
    run.finish("b")
    assert run.wf_status() is S.SUCCEEDED


# -- N_OF_M and DISCRIMINATOR --------------------------------------------------------------


def quorum(policy: StragglerPolicy = StragglerPolicy.IGNORE, **join: Any) -> Run:
    settings: dict[str, Any] = {"join_type": J.N_OF_M, "join_threshold": 2}
    settings.update(join)
    return Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("d", ["a"]),
        stage("j", ["b", "c", "d"], straggler_policy=policy, **settings),
        stage("after", ["j"]),
    )


def test_n_of_m_fires_once_when_k_requisites_succeeded() -> None:
    run = quorum()
    run.finish("a")
    run.finish("c")
    assert run.st("j") is S.NOT_STARTED
    assert run.events("join.fired") == []
    run.finish("b", status=S.FAILED_CONTINUE)  # FAILED_CONTINUE counts as a success
    assert run.st("j") is S.RUNNING
    fired = run.events_of("join.fired", "j")
    assert [(e.data["succeeded"], e.data["needed"]) for e in fired] == [(2, 2)]
    run.finish("j")
    assert run.st("after") is S.RUNNING
    run.finish("d")  # IGNORE: the straggler runs to completion, the join does not fire again
    run.finish("after")
    assert run.status()["d"] == ("SUCCEEDED", None)
    assert run.wf_status() is S.SUCCEEDED
    assert len(run.events("join.fired")) == 1
    assert run.task_starts() == Counter({"a": 1, "b": 1, "c": 1, "d": 1, "j": 1, "after": 1})


def test_ignore_policy_keeps_the_workflow_running_until_stragglers_finish() -> None:
    run = quorum()
    run.finish("a")
    run.finish("b")
    run.finish("c")
    run.finish("j")
    run.finish("after")
    assert run.st("d") is S.RUNNING
    assert run.wf_status() is S.RUNNING
    run.finish("d")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts()["j"] == 1


def test_discriminator_fires_on_the_first_success_only() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("j", ["b", "c"], join_type=J.DISCRIMINATOR),
    )
    run.finish("a")
    run.finish("c", {"winner": "c"})
    assert run.st("j") is S.RUNNING
    assert run.wf.task_context(run["j"])["winner"] == "c"
    fired = run.events_of("join.fired", "j")
    assert [(e.data["succeeded"], e.data["needed"]) for e in fired] == [(1, 1)]
    run.finish("b", {"winner": "b"})  # while the join runs
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert len(run.events("join.fired")) == 1
    assert run.task_starts()["j"] == 1


def test_discriminator_ignores_a_dead_requisite_and_waits_for_a_success() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "false"}),
        stage("c", ["s"]),
        stage("b", ["s"]),
        stage("j", ["b", "c"], join_type=J.DISCRIMINATOR),
    )
    run.finish("s")
    assert run.status()["b"] == ("SKIPPED", "branch_not_taken")
    assert run.st("j") is S.NOT_STARTED
    run.finish("c")
    assert run.st("j") is S.RUNNING


def test_discriminator_does_not_count_a_disabled_requisite_as_a_success() -> None:
    """A disabled branch is SKIPPED, not succeeded: the join waits for a real success."""
    run = Run(
        stage("a"),
        stage("c", ["a"]),
        stage("b", ["a"], context={"stageEnabled": False}),
        stage("j", ["b", "c"], join_type=J.DISCRIMINATOR),
    )
    run.finish("a")
    assert run.status()["b"] == ("SKIPPED", "disabled")
    assert run.st("c") is S.RUNNING
    assert run.st("j") is S.NOT_STARTED
    assert run.events("join.fired") == []


def test_quorum_that_cannot_be_reached_ends_the_join_terminal() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "false", "c": "false"}),
        stage("d", ["s"]),
        stage("b", ["s"]),
        stage("c", ["s"]),
        stage("j", ["b", "c", "d"], join_type=J.N_OF_M, join_threshold=2),
    )
    run.finish("s")
    assert run.st("j") is S.NOT_STARTED  # d may still succeed... but 1 < 2 anyway
    run.finish("d")
    message = "join 'j' needed 2 of its 3 requisites to succeed, but only 1 did"
    assert run.st("j") is S.TERMINAL
    assert run.wf_status() is S.TERMINAL
    assert run.wf.error == message
    assert [e.data["error"] for e in run.events_of("stage.failed", "j")] == [message]
    assert run.events("join.fired") == []


def test_cancel_policy_cancels_running_stragglers_and_withdraws_unstarted_ones() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("d1", ["a"]),
        stage("d2", ["d1"]),
        stage(
            "j",
            ["b", "c", "d2"],
            join_type=J.DISCRIMINATOR,
            straggler_policy=StragglerPolicy.CANCEL,
        ),
        stage("after", ["j"]),
    )
    run.finish("a")
    c_task = run["c"].tasks[0]
    fx = run.finish("b")
    assert run.status() == {
        "a": ("SUCCEEDED", None),
        "b": ("SUCCEEDED", None),
        "c": ("CANCELED", "straggler"),
        "d1": ("CANCELED", "straggler"),
        "d2": ("SKIPPED", "withdrawn"),
        "j": ("RUNNING", None),
        "after": ("NOT_STARTED", None),
    }
    assert c_task.status is S.CANCELED
    assert run["d1"].tasks[0].status is S.CANCELED
    assert run["d2"].is_dead
    kinds = [(e.event_type, e.data.get("reason")) for e in fx.events]
    assert ("join.fired", None) in kinds
    assert kinds.count(("stage.canceled", "straggler")) == 2
    assert kinds.count(("stage.skipped", "withdrawn")) == 1
    assert not fx.drop_messages  # the workflow goes on
    # The canceled straggler's late result is stale: nothing changes.
    late = complete_task(
        run.wf, run["c"].id, c_task.id, TaskOutcome(S.SUCCEEDED, outputs={"x": 1}), 9_000
    )
    assert late.stale
    assert run["c"].outputs == {}
    run.finish("j")
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts() == Counter({"a": 1, "b": 1, "c": 1, "d1": 1, "j": 1, "after": 1})


def test_cancel_policy_leaves_no_stage_behind_a_canceled_straggler_unfinished() -> None:
    """A straggler's descendants that do not lead to the join must not stay NOT_STARTED.

    ``side`` hangs off the canceled straggler ``c`` only; like after ``cancel_stages`` (a
    canceled stage counts like a branch not taken) it should end SKIPPED, not be left
    NOT_STARTED in a SUCCEEDED workflow.
    """
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("side", ["c"]),
        stage("j", ["b", "c"], join_type=J.DISCRIMINATOR, straggler_policy=StragglerPolicy.CANCEL),
    )
    run.finish("a")
    run.finish("b")
    assert run.status()["c"] == ("CANCELED", "straggler")
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert run.st("side") is S.SKIPPED
    assert not [s.ref_id for s in run.wf.stages if s.status is S.NOT_STARTED]


def test_cancel_policy_with_a_quorum_cancels_only_what_still_runs() -> None:
    run = quorum(StragglerPolicy.CANCEL)
    run.finish("a")
    run.finish("b")
    run.finish("d")
    assert run.status()["c"] == ("CANCELED", "straggler")
    assert run.status()["b"] == ("SUCCEEDED", None)
    assert run.status()["d"] == ("SUCCEEDED", None)
    run.finish("j")
    run.finish("after")
    assert run.wf_status() is S.SUCCEEDED


def test_merge_policy_reduces_late_outputs_into_the_join() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("d", ["a"]),
        stage(
            "j",
            ["b", "c", "d"],
            join_type=J.DISCRIMINATOR,
            straggler_policy=StragglerPolicy.MERGE,
            output_reducers={"answer": "collect", "cost": "sum"},
        ),
    )
    run.finish("a")
    run.finish("c", {"answer": "c", "cost": 2})
    assert run.wf.task_context(run["j"])["answer"] == ["c"]
    run.finish("j", {"verdict": "first"})
    assert run["j"].outputs == {"verdict": "first"}
    run.finish("b", {"answer": "b", "cost": 3})
    assert run["j"].outputs == {"verdict": "first", "answer": ["b", "c"], "cost": 5}
    run.finish("d", {"answer": "d", "cost": 4})
    assert run["j"].outputs == {"verdict": "first", "answer": ["b", "c", "d"], "cost": 9}
    updates = run.events_of("outputs.updated", "j")
    assert [(e.data["late_from"], e.data["outputs"]) for e in updates] == [
        ("b", {"answer": ["b", "c"], "cost": 5}),
        ("d", {"answer": ["b", "c", "d"], "cost": 9}),
    ]
    assert run.task_starts()["j"] == 1
    assert run.wf_status() is S.SUCCEEDED


def test_ignore_policy_does_not_merge_late_outputs() -> None:
    run = Run(
        stage("a"),
        stage("b"),
        stage("j", ["a", "b"], join_type=J.DISCRIMINATOR, output_reducers={"v": "collect"}),
    )
    run.finish("a", {"v": 1})
    run.finish("j")
    run.finish("b", {"v": 2})
    assert run["j"].outputs == {}
    assert run.events("outputs.updated") == []


# -- MULTI_MERGE -------------------------------------------------------------------------


def test_multi_merge_runs_once_per_successful_requisite() -> None:
    run = Run(
        stage("b"),
        stage("c"),
        stage("d"),
        stage("j", ["b", "c", "d"], join_type=J.MULTI_MERGE),
    )
    run.finish("b", {"from": "b"})
    assert run.st("j") is S.RUNNING
    run.finish("c", {"from": "c"})  # arrives while j runs
    run.finish("d", {"from": "d"})
    assert run["j"].multi_merge_pending == 2
    run.finish("j")
    assert run.st("j") is S.RUNNING
    assert run["j"].multi_merge_pending == 1
    run.finish("j")
    assert run["j"].multi_merge_pending == 0
    run.finish("j")
    assert run.st("j") is S.SUCCEEDED
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts()["j"] == 3
    assert len(run.events_of("stage.completed", "j")) == 3


def test_multi_merge_restarts_a_completed_join_when_another_requisite_succeeds() -> None:
    run = Run(stage("b"), stage("c"), stage("j", ["b", "c"], join_type=J.MULTI_MERGE))
    run.finish("b")
    run.finish("j")
    assert run.st("j") is S.SUCCEEDED
    assert run.wf_status() is S.RUNNING
    run.finish("c")
    assert run.st("j") is S.RUNNING
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts()["j"] == 2


def test_multi_merge_does_not_run_for_a_dead_requisite() -> None:
    run = Run(
        stage("s", split_type=SplitType.OR, split_conditions={"b": "false"}),
        stage("c", ["s"]),
        stage("b", ["s"]),
        stage("d", ["s"]),
        stage("j", ["b", "c", "d"], join_type=J.MULTI_MERGE),
    )
    run.finish("s")
    run.finish("c")
    run.finish("j")
    run.finish("d")
    run.finish("j")
    assert run.wf_status() is S.SUCCEEDED
    assert run.task_starts()["j"] == 2


# -- loops around joins ------------------------------------------------------------------


def test_jump_back_around_a_join_reruns_every_stage_in_the_loop() -> None:
    run = Run(
        stage("a"),
        stage("b", ["a"]),
        stage("c", ["a"]),
        stage("j", ["b", "c"]),
        stage("end", ["j"]),
    )
    for i in range(3):
        run.finish("a", {"pass": i})
        run.finish("c")
        run.finish("b")
        assert run.st("j") is S.RUNNING
        assert run.wf.task_context(run["j"])["pass"] == i
        if i < 2:
            run.finish("j", status=S.REDIRECT, target_stage_ref_id="a", context={"round": i + 1})
            assert run.st("a") is S.RUNNING
            assert run["a"].context["round"] == i + 1
            for ref in ("b", "c", "j"):
                assert run[ref].status is S.NOT_STARTED
        else:
            run.finish("j")
    run.finish("end")
    assert run.wf_status() is S.SUCCEEDED
    assert run.wf.jump_count == 2
    assert run.task_starts() == Counter({"a": 3, "b": 3, "c": 3, "j": 3, "end": 1})
