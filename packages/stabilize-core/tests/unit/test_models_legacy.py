"""Stage rows of the old form, with the engine's keys in the context (models/_legacy.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from stabilize.models import LoopConfig, StageExecution, WorkflowStatus
from stabilize.models._legacy import LEGACY_KEYS, upgrade_stage_row

S = WorkflowStatus


def task(status: str = "RUNNING", **fields: Any) -> dict[str, Any]:
    return {"id": f"t_{status}", "name": "t", "implementing_class": "x", "status": status, **fields}


def row(context: dict[str, Any], *tasks: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": "s",
        "ref_id": "s",
        "status": "RUNNING",
        "start_time": 5,
        "context": context,
        "tasks": list(tasks) or [task()],
        **fields,
    }


def test_the_engine_s_stage_keys_become_fields() -> None:
    old = row(
        {
            "x": 1,
            "_jump_count": 2,
            "_signal_name": "go",
            "_signal_data": {"n": 1},
            "_signal_user": "alice",
            "_signal_timeout_seconds": 30,
            "_mi_index": 0,
            "_mi_generation": "s.3",
            "_sub_workflow_id": "child",
        }
    )
    stage = StageExecution.from_dict(old)
    assert (stage.jump_count, stage.signal_user, stage.mi_index, stage.mi_generation) == (
        2,
        "alice",
        0,
        "s.3",
    )
    # Documented keys stay; the timer, read only from a task's result, is dropped.
    assert stage.context == {
        "x": 1,
        "_signal_name": "go",
        "_signal_data": {"n": 1},
        "_sub_workflow_id": "child",
    }
    assert old["context"]["_jump_count"] == 2  # the row read is not changed


def test_a_loop_check_stage_s_settings_become_its_loop() -> None:
    guard = StageExecution.from_dict(
        row(
            {
                "_loop_mode": "while",
                "_loop_condition": "n < 3",
                "_loop_max_iterations": 5,
                "_loop_target": "w_done",
                "_loop_fail_when_exhausted": True,
                "_loop_iteration": 3,
                "_loop_carry": {"n": 2},
            }
        )
    )
    assert guard.loop == LoopConfig("while", "n < 3", 5, "w_done", True)
    assert guard.context == {}
    assert guard.tasks[0].state == {"kept": {"iteration": 3, "carry": {"n": 2}}}


def test_what_a_task_kept_goes_to_the_last_task_that_started() -> None:
    stage = StageExecution.from_dict(
        row(
            {"_wait_until": 9.5, "_llm_retry": {"key": "5:c", "attempts": 2}},
            task("SUCCEEDED"),
            task("RUNNING"),
            task("NOT_STARTED"),
        )
    )
    assert [t.state for t in stage.tasks] == [
        {},
        {"until": 9.5, "llm_retry": {"key": "5:c", "attempts": 2}},
        {},
    ]
    assert stage.context == {}
    not_started = StageExecution.from_dict(
        row({"_wait_until": 1.0}, task("NOT_STARTED"), task("NOT_STARTED"))
    )
    assert [t.state for t in not_started.tasks] == [{"until": 1.0}, {}]


def test_an_agent_checkpoint_becomes_its_task_state_with_the_step_kept() -> None:
    checkpoint = {"messages": [{"role": "user"}], "step": 4, "iterations": 1, "run_started": 5}
    stage = StageExecution.from_dict(row({"_agent": checkpoint}))
    assert stage.tasks[0].state == {
        "messages": [{"role": "user"}],
        "step": 4,
        "iterations": 1,
        "kept": {"step": 4},
    }
    # A checkpoint of an earlier run of the stage (a reset since): only the step count.
    earlier = StageExecution.from_dict(
        row({"_agent": {**checkpoint, "run_started": 1}}, start_time=None, status="NOT_STARTED")
    )
    assert earlier.tasks[0].state == {"kept": {"step": 4}}
    # Written before run_started existed: this run's.
    unmarked = {k: v for k, v in checkpoint.items() if k != "run_started"}
    assert StageExecution.from_dict(row({"_agent": unmarked})).tasks[0].state["messages"]


def test_a_typed_field_already_set_wins_over_an_old_key() -> None:
    stage = StageExecution.from_dict(
        row(
            {"_jump_count": 1, "_signal_user": "old", "_wait_until": 1.0},
            task(state={"until": 2.0}),
            jump_count=3,
            signal_user="new",
        )
    )
    assert (stage.jump_count, stage.signal_user) == (3, "new")
    assert stage.tasks[0].state == {"until": 2.0}
    assert stage.context == {}


def test_a_stage_without_tasks_keeps_what_no_task_can_hold() -> None:
    data = row({"_wait_until": 1.0, "_jump_count": 1})
    data["tasks"] = []
    stage = StageExecution.from_dict(data)
    assert stage.context == {"_wait_until": 1.0}
    assert stage.jump_count == 1


def test_a_row_of_the_new_form_is_returned_as_it_is() -> None:
    data = row({"x": 1, "_signal_name": "go", "_max_jumps": 3})
    assert upgrade_stage_row(data) is data


legacy_values = st.fixed_dictionaries(
    {},
    optional={
        "_jump_count": st.integers(0, 5),
        "_signal_user": st.none() | st.text(max_size=5),
        "_mi_generation": st.text(max_size=5),
        "_mi_index": st.integers(0, 5),
        "_loop_mode": st.sampled_from(["until", "while", "next"]),
        "_loop_condition": st.text(max_size=5),
        "_loop_max_iterations": st.integers(0, 5),
        "_loop_target": st.text(min_size=1, max_size=5),
        "_loop_fail_when_exhausted": st.booleans(),
        "_loop_iteration": st.integers(1, 5),
        "_loop_carry": st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        "_signal_timeout_seconds": st.none() | st.floats(0, 10),
        "_wait_until": st.floats(0, 10),
        "_llm_retry": st.fixed_dictionaries({"key": st.text(max_size=3)}),
        "_agent": st.fixed_dictionaries(
            {"step": st.integers(0, 9), "messages": st.just([])},
            optional={"run_started": st.none() | st.integers(0, 9)},
        ),
    },
)
user_values = st.dictionaries(
    st.text(max_size=5).filter(lambda k: k not in LEGACY_KEYS), st.integers(), max_size=3
)
statuses = st.lists(st.sampled_from(["NOT_STARTED", "RUNNING", "SUCCEEDED"]), max_size=3)


@given(legacy_values, user_values, statuses, st.none() | st.integers(0, 9))
def test_reading_an_old_row_leaves_no_engine_key_and_reads_back_the_same(
    legacy: dict[str, Any], user: dict[str, Any], task_statuses: list[str], started: int | None
) -> None:
    data = row({**user, **legacy}, start_time=started)
    data["tasks"] = [task(s) for s in task_statuses]
    stage = StageExecution.from_dict(json.loads(json.dumps(data)))
    left = set(stage.context) - set(user)
    if task_statuses:
        assert left == set()
    else:  # only a task can hold a task's state
        assert left <= {"_agent", "_wait_until", "_llm_retry", "_loop_iteration", "_loop_carry"}
    again = StageExecution.from_dict(json.loads(json.dumps(stage.to_row())))
    assert again.to_dict() == stage.to_dict()
    assert upgrade_stage_row(data) == upgrade_stage_row(upgrade_stage_row(data))
