"""TaskResult constructors, the builder and merge_outputs (tasks/result.py)."""

from __future__ import annotations

from typing import Any

import pytest

from stabilize import InvalidTaskResultError
from stabilize.models import WorkflowStatus
from stabilize.tasks.result import TaskResult, TaskResultBuilder, result_problem

S = WorkflowStatus


def fields(result: TaskResult) -> tuple[Any, ...]:
    return (
        result.status,
        result.context,
        result.outputs,
        result.target_stage_ref_id,
        result.error,
    )


def test_success() -> None:
    assert fields(TaskResult.success()) == (S.SUCCEEDED, {}, {}, None, None)
    assert fields(TaskResult.success({"o": 1}, {"c": 2})) == (
        S.SUCCEEDED,
        {"c": 2},
        {"o": 1},
        None,
        None,
    )
    assert fields(TaskResult.success(outputs={"o": 1}, context={"c": 2})) == (
        S.SUCCEEDED,
        {"c": 2},
        {"o": 1},
        None,
        None,
    )


def test_constructors_copy_the_dicts_they_are_given() -> None:
    outputs = {"o": 1}
    context = {"c": 1}
    result = TaskResult.success(outputs, context)
    outputs["o"] = 2
    context["extra"] = 1
    assert result.outputs == {"o": 1}
    assert result.context == {"c": 1}


def test_running() -> None:
    assert fields(TaskResult.running()) == (S.RUNNING, {}, {}, None, None)
    assert fields(TaskResult.running({"poll": 1})) == (S.RUNNING, {"poll": 1}, {}, None, None)


def test_terminal_and_its_failure_alias() -> None:
    assert fields(TaskResult.terminal("boom")) == (S.TERMINAL, {}, {}, None, "boom")
    assert fields(TaskResult.terminal("boom", {"c": 1})) == (S.TERMINAL, {"c": 1}, {}, None, "boom")
    assert fields(TaskResult.failure("bad")) == (S.TERMINAL, {}, {}, None, "bad")


def test_failed_continue() -> None:
    assert fields(TaskResult.failed_continue("meh")) == (S.FAILED_CONTINUE, {}, {}, None, "meh")
    assert fields(TaskResult.failed_continue("meh", {"o": 1}, {"c": 1})) == (
        S.FAILED_CONTINUE,
        {"c": 1},
        {"o": 1},
        None,
        "meh",
    )


def test_skipped_canceled_stopped() -> None:
    assert fields(TaskResult.skipped()) == (S.SKIPPED, {}, {}, None, None)
    assert fields(TaskResult.canceled()) == (S.CANCELED, {}, {}, None, None)
    assert fields(TaskResult.canceled({"o": 1})) == (S.CANCELED, {}, {"o": 1}, None, None)
    assert fields(TaskResult.stopped()) == (S.STOPPED, {}, {}, None, None)
    assert fields(TaskResult.stopped({"o": 1})) == (S.STOPPED, {}, {"o": 1}, None, None)


def test_suspend() -> None:
    assert fields(TaskResult.suspend()) == (S.SUSPENDED, {}, {}, None, None)
    assert fields(TaskResult.suspend({"wait": "x"})) == (S.SUSPENDED, {"wait": "x"}, {}, None, None)


def test_redirect_has_no_target() -> None:
    assert fields(TaskResult.redirect({"r": 1})) == (S.REDIRECT, {"r": 1}, {}, None, None)
    assert fields(TaskResult.redirect()) == (S.REDIRECT, {}, {}, None, None)


def test_jump_to() -> None:
    assert fields(TaskResult.jump_to("build")) == (S.REDIRECT, {}, {}, "build", None)
    assert fields(TaskResult.jump_to("build", {"c": 1}, {"o": 2})) == (
        S.REDIRECT,
        {"c": 1},
        {"o": 2},
        "build",
        None,
    )


def test_builder() -> None:
    builder = TaskResult.builder(S.SUCCEEDED)
    assert isinstance(builder, TaskResultBuilder)
    result = (
        builder.context({"a": 1}).add_context("b", 2).outputs({"x": 1}).add_output("y", 2).build()
    )
    assert fields(result) == (S.SUCCEEDED, {"a": 1, "b": 2}, {"x": 1, "y": 2}, None, None)


def test_builder_context_and_outputs_replace_and_copy() -> None:
    source = {"a": 1}
    result = (
        TaskResultBuilder(S.TERMINAL)
        .add_context("gone", 1)
        .context(source)
        .add_output("gone", 1)
        .outputs({"kept": 1})
        .build()
    )
    source["later"] = 1
    assert result.status is S.TERMINAL
    assert result.context == {"a": 1}
    assert result.outputs == {"kept": 1}


def test_builder_without_anything_added() -> None:
    assert fields(TaskResult.builder(S.RUNNING).build()) == (S.RUNNING, {}, {}, None, None)


def test_merge_outputs_returns_a_copy_with_the_new_keys_winning() -> None:
    original = TaskResult.failed_continue("meh", {"a": 1, "b": 1}, {"c": 1})
    original.target_stage_ref_id = "t"
    merged = original.merge_outputs({"b": 2, "n": 3})
    assert fields(merged) == (S.FAILED_CONTINUE, {"c": 1}, {"a": 1, "b": 2, "n": 3}, "t", "meh")
    assert merged is not original
    assert original.outputs == {"a": 1, "b": 1}
    merged.context["x"] = 1
    assert original.context == {"c": 1}


# -- checked when built (issue 13) -------------------------------------------------------


def test_a_status_given_as_a_string_is_refused_with_the_spelling_to_use():
    with pytest.raises(InvalidTaskResultError, match=r"WorkflowStatus\.SUCCEEDED"):
        TaskResult("succeeded")  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["context", "outputs"])
def test_context_and_outputs_must_be_dicts(field):
    with pytest.raises(InvalidTaskResultError, match=rf"TaskResult\.{field} must be a dict"):
        TaskResult(S.SUCCEEDED, **{field: [("a", 1)]})  # type: ignore[arg-type]


def test_a_value_that_is_not_json_is_refused_naming_its_key():
    with pytest.raises(InvalidTaskResultError, match=r"TaskResult\.outputs\['v'\].*surrogate"):
        TaskResult.success(outputs={"v": "\udc80"})
    with pytest.raises(InvalidTaskResultError, match=r"TaskResult\.context\['a'\]\[0\]"):
        TaskResult.running(context={"a": [{1, 2}]})


def test_a_jump_target_must_be_a_string():
    with pytest.raises(InvalidTaskResultError, match="target_stage_ref_id"):
        TaskResult.jump_to(3)  # type: ignore[arg-type]


def test_the_builder_checks_what_was_added():
    builder = TaskResult.builder(S.SUCCEEDED).add_output("when", object())
    with pytest.raises(InvalidTaskResultError, match=r"outputs\['when'\]"):
        builder.build()


def test_an_exception_given_as_the_error_becomes_its_text():
    assert TaskResult.terminal(ValueError("boom")).error == "boom"  # type: ignore[arg-type]


def test_result_problem_sees_changes_made_after_building():
    result = TaskResult.success()
    assert result_problem(result) is None
    result.outputs["bad"] = float("nan")
    assert "outputs['bad']" in (result_problem(result) or "")
    assert "must return a TaskResult" in (result_problem({"a": 1}) or "")


# -- the task's own state and a suspension's timer (issue 18) -----------------------------


def test_state_is_none_unless_given_and_is_copied() -> None:
    for result in (TaskResult.success(), TaskResult.running(), TaskResult.jump_to("a")):
        assert result.state is None
    given = {"step": 1}
    results = [
        TaskResult.success(state=given),
        TaskResult.running(state=given),
        TaskResult.suspend(state=given),
        TaskResult.jump_to("a", state=given),
    ]
    given["step"] = 2
    assert [r.state for r in results] == [{"step": 1}] * 4
    assert TaskResult.running(state={}).state == {}  # an empty state clears it


def test_suspend_takes_a_timer_in_seconds() -> None:
    assert TaskResult.suspend().signal_timeout is None
    assert TaskResult.suspend(signal_timeout=0).signal_timeout == 0
    assert TaskResult.suspend({"w": 1}, signal_timeout=2.5).signal_timeout == 2.5


@pytest.mark.parametrize("timeout", [-1, float("nan"), float("inf"), True, "5", [5]])
def test_a_timer_that_is_no_number_of_seconds_is_refused(timeout: Any) -> None:
    with pytest.raises(
        InvalidTaskResultError, match=r"TaskResult\.signal_timeout must be a number"
    ):
        TaskResult.suspend(signal_timeout=timeout)


def test_a_timer_on_a_result_that_does_not_suspend_is_refused() -> None:
    with pytest.raises(InvalidTaskResultError, match="applies to a SUSPENDED result, not RUNNING"):
        TaskResult(S.RUNNING, signal_timeout=5)


def test_a_state_that_cannot_be_stored_is_refused_naming_its_key() -> None:
    with pytest.raises(InvalidTaskResultError, match=r"TaskResult\.state\['when'\]"):
        TaskResult.running(state={"when": object()})
    with pytest.raises(InvalidTaskResultError, match=r"TaskResult\.state must be a dict"):
        TaskResult(S.RUNNING, state=[1])  # type: ignore[arg-type]


def test_merge_outputs_and_the_builder_keep_state_and_timer() -> None:
    merged = TaskResult.suspend(state={"s": 1}, signal_timeout=3).merge_outputs({"o": 1})
    assert (merged.state, merged.signal_timeout, merged.outputs) == ({"s": 1}, 3, {"o": 1})
    built = TaskResult.builder(S.RUNNING).state({"s": 2}).build()
    assert built.state == {"s": 2}
    with pytest.raises(InvalidTaskResultError, match=r"TaskResult\.state\['x'\]"):
        TaskResult.builder(S.RUNNING).state({"x": {1, 2}}).build()
