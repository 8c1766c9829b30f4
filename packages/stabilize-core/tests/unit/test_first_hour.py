"""The pure pieces of issue 15: one-task stages, failure summaries, fail_workflow on a
stage, ProcessResult."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.engine.transitions import fail_workflow, start_workflow
from stabilize.models import JoinType, StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.queue.processor import ProcessResult

S = WorkflowStatus
T0 = 1_000

names = st.text(min_size=1, max_size=12)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=8,
)


def comparable(stage: StageExecution) -> dict[str, Any]:
    """The stage's definition without its generated ids."""
    data = stage.to_dict()
    data.pop("id")
    for task in data["tasks"]:
        task.pop("id")
    return data


# -- StageExecution.for_task --------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    ref_id=names,
    task=names,
    context=st.dictionaries(st.text(max_size=6), json_values, max_size=4),
    requires=st.sets(names, max_size=3),
)
@example(ref_id="greet", task="greet", context={}, requires=set())
def test_for_task_is_the_long_spelling(
    ref_id: str, task: str, context: dict[str, Any], requires: set[str]
) -> None:
    short = StageExecution.for_task(ref_id, task, context=context, requisite_stage_ref_ids=requires)
    long = StageExecution(
        ref_id=ref_id,
        type=task,
        name=ref_id,
        context=dict(context),
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(ref_id, task, stage_start=True, stage_end=True)],
    )

    assert comparable(short) == comparable(long)
    assert short.context is not context  # the caller's dict is not shared


def test_for_task_passes_other_fields_and_overrides() -> None:
    stage = StageExecution.for_task(
        "join",
        "merge",
        name="Join",
        type="custom",
        join_type=JoinType.N_OF_M,
        join_threshold=2,
        requisite_stage_ref_ids=["a", "b", "c"],
    )

    assert (stage.name, stage.type, stage.join_type, stage.join_threshold) == (
        "Join",
        "custom",
        JoinType.N_OF_M,
        2,
    )
    assert stage.requisite_stage_ref_ids == {"a", "b", "c"}
    assert [(t.name, t.implementing_class) for t in stage.tasks] == [("join", "merge")]


def test_a_stage_without_tasks_still_succeeds_at_once() -> None:
    # for_task did not change what a task-less stage means: a step that succeeds at once.
    wf = Workflow.create("app", "wf", [StageExecution(ref_id="marker", type="marker")])

    start_workflow(wf, T0)

    assert wf.stages[0].tasks == []
    assert wf.stages[0].status is S.SUCCEEDED
    assert wf.status is S.SUCCEEDED


# -- Workflow.failure_summary -------------------------------------------------------------


def two_stages() -> Workflow:
    return Workflow.create(
        "app",
        "wf",
        [
            StageExecution.for_task("a", "one"),
            StageExecution.for_task("b", "two", requisite_stage_ref_ids={"a"}),
        ],
    )


def test_failure_summary_is_none_unless_the_workflow_failed() -> None:
    wf = two_stages()
    assert wf.failure_summary() is None  # NOT_STARTED
    for status in (S.RUNNING, S.SUCCEEDED, S.CANCELED, S.SUSPENDED):
        wf.status = status
        assert wf.failure_summary() is None, status


def test_failure_summary_names_the_failed_stage_and_task_once() -> None:
    wf = two_stages()
    wf.status = S.TERMINAL
    wf.error = "task 'b' of stage 'b' failed: ValueError: bad input"
    stage = wf.stage_by_ref_id("b")
    stage.status = S.TERMINAL
    stage.tasks[0].status = S.TERMINAL
    stage.tasks[0].task_exception_details = {
        "exception_type": "ValueError",
        "message": "task 'b' of stage 'b' failed: ValueError: bad input",
    }

    assert wf.failure_summary() == (
        f"workflow 'wf' ({wf.id}) ended TERMINAL\n"
        "  stage 'b' ended TERMINAL\n"
        "    task 'b': task 'b' of stage 'b' failed: ValueError: bad input"
    )


def test_failure_summary_keeps_a_workflow_error_no_task_carries() -> None:
    wf = two_stages()
    wf.status = S.TERMINAL
    wf.error = "deadline of stage 'a' passed"

    assert wf.failure_summary() == (
        f"workflow 'wf' ({wf.id}) ended TERMINAL\n  deadline of stage 'a' passed"
    )


# -- fail_workflow on a stage -------------------------------------------------------------


def test_fail_workflow_marks_the_stage_and_task_at_fault() -> None:
    wf = two_stages()
    b = wf.stage_by_ref_id("b")

    fx = fail_workflow(wf, "no task registered as 'two'", T0, stage_id=b.id, task_id=b.tasks[0].id)

    assert wf.status is S.TERMINAL
    assert wf.error == "no task registered as 'two'"
    assert (b.status, b.end_time) == (S.TERMINAL, T0)
    assert b.tasks[0].status is S.TERMINAL
    assert b.tasks[0].task_exception_details == {"message": "no task registered as 'two'"}
    assert wf.stage_by_ref_id("a").status is S.NOT_STARTED
    assert b.id in fx.stages
    kinds = [(e.event_type, e.entity_id) for e in fx.events]
    assert ("task.failed", b.tasks[0].id) in kinds
    assert ("stage.failed", b.id) in kinds
    assert kinds[-1] == ("workflow.failed", wf.id)


def test_fail_workflow_without_a_stage_is_unchanged() -> None:
    wf = two_stages()

    fail_workflow(wf, "cannot run", T0)

    assert wf.status is S.TERMINAL
    assert all(s.status is S.NOT_STARTED for s in wf.stages)


def test_fail_workflow_on_a_finished_workflow_is_stale() -> None:
    wf = two_stages()
    wf.status = S.SUCCEEDED
    b = wf.stage_by_ref_id("b")

    fx = fail_workflow(wf, "late", T0, stage_id=b.id, task_id=b.tasks[0].id)

    assert fx.stale
    assert b.status is S.NOT_STARTED


# -- ProcessResult ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    processed=st.integers(min_value=0, max_value=10**6),
    pending=st.integers(min_value=0, max_value=100),
    running=st.integers(min_value=0, max_value=100),
    timed_out=st.booleans(),
)
def test_process_result_is_the_count_and_says_what_was_left(
    processed: int, pending: int, running: int, timed_out: bool
) -> None:
    result = ProcessResult(processed, pending=pending, running=running, timed_out=timed_out)

    assert isinstance(result, int)
    assert result == processed
    assert result + 1 == processed + 1
    assert result.finished == (pending == 0 and running == 0)
    assert (result.pending, result.running, result.timed_out) == (pending, running, timed_out)
    assert repr(result) == (
        f"ProcessResult({processed}, pending={pending}, running={running}, timed_out={timed_out})"
    )


def test_process_result_defaults_to_finished() -> None:
    assert ProcessResult(3).finished
    assert not ProcessResult(3).timed_out
