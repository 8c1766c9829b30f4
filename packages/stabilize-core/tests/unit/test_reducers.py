"""Fan-in reducers (stabilize/reducers.py) and how a join's tasks see them (task_context)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from stabilize import reducers
from stabilize.engine.transitions import TaskOutcome, complete_task, start_workflow
from stabilize.models import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.reducers import apply_output_reducers, get_reducer, has_reducer, register_reducer

S = WorkflowStatus


@pytest.fixture(autouse=True)
def private_custom_reducers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Custom reducers are process-wide: give each test an empty set of its own."""
    monkeypatch.setattr(reducers, "_custom", {})


@pytest.mark.parametrize(
    ("name", "values", "expected"),
    [
        ("collect", [1, [2], {"a": 3}], [1, [2], {"a": 3}]),
        ("append", [1, [2]], [1, [2]]),
        ("extend", [[1, 2], 3, (4, 5)], [1, 2, 3, 4, 5]),
        ("sum", [1, 2, 3.5], 6.5),
        ("max", [3, 9, 1], 9),
        ("min", [3, 9, 1], 1),
        ("merge", [{"a": 1, "b": 1}, {"b": 2}, {"c": 3}], {"a": 1, "b": 2, "c": 3}),
        ("first", ["x", "y", "z"], "x"),
        ("last", ["x", "y", "z"], "z"),
        ("max", [], None),
        ("min", [], None),
        ("first", [], None),
        ("last", [], None),
        ("sum", [], 0),
        ("collect", [], []),
    ],
)
def test_builtin_reducers(name: str, values: list[Any], expected: Any) -> None:
    assert has_reducer(name)
    assert get_reducer(name)(list(values)) == expected


def test_merge_refuses_values_that_are_not_dicts() -> None:
    with pytest.raises(TypeError, match="merge reducer needs dicts"):
        get_reducer("merge")([{"a": 1}, 2])


def test_unknown_reducer_names_raise_value_error_listing_the_known_ones() -> None:
    assert not has_reducer("median")
    with pytest.raises(ValueError, match=r"unknown reducer 'median'.*collect"):
        get_reducer("median")
    with pytest.raises(ValueError, match="unknown reducer 'median'"):
        apply_output_reducers({"x": "median"}, [{"x": 1}])


def test_apply_output_reducers_raises_for_unknown_names_even_without_values() -> None:
    with pytest.raises(ValueError, match="unknown reducer 'nope'"):
        apply_output_reducers({"x": "nope"}, [])


def test_apply_output_reducers_combines_key_by_key_in_branch_order() -> None:
    branches = [
        {"finding": "a", "n": 1, "tags": ["x"]},
        {"n": 2, "tags": ["y", "z"], "other": True},
        {"finding": "c", "n": 3},
    ]
    combined = apply_output_reducers(
        {"finding": "collect", "n": "sum", "tags": "extend", "absent": "collect"}, branches
    )
    # Branches lacking a key are left out of its values; a key no branch has is not produced.
    assert combined == {"finding": ["a", "c"], "n": 6, "tags": ["x", "y", "z"]}


def test_register_reducer_adds_a_custom_reducer() -> None:
    register_reducer("median", lambda values: sorted(values)[len(values) // 2])
    assert has_reducer("median")
    assert apply_output_reducers({"v": "median"}, [{"v": 9}, {"v": 1}, {"v": 5}]) == {"v": 5}


def test_register_reducer_overrides_a_builtin() -> None:
    register_reducer("sum", lambda values: "custom:" + ",".join(map(str, values)))
    assert apply_output_reducers({"v": "sum"}, [{"v": 1}, {"v": 2}]) == {"v": "custom:1,2"}


@pytest.mark.parametrize(("name", "fn"), [("", list), ("x", None), ("x", "not callable")])
def test_register_reducer_needs_a_name_and_a_callable(name: str, fn: Any) -> None:
    with pytest.raises(ValueError, match="needs a name and a callable"):
        register_reducer(name, fn)
    assert not has_reducer("x")


# -- what a join's task sees -----------------------------------------------------------


def stage(
    ref: str, requires: Iterable[str] = (), *, reducers: dict[str, str] | None = None
) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="t",
        name=ref,
        requisite_stage_ref_ids=set(requires),
        output_reducers=dict(reducers or {}),
        tasks=[TaskExecution.create("t", "noop")],
    )


def finish(wf: Workflow, ref: str, outputs: dict[str, Any], status: S = S.SUCCEEDED) -> None:
    s = wf.stage_by_ref_id(ref)
    task = next(t for t in s.tasks if t.status is S.RUNNING)
    fx = complete_task(wf, s.id, task.id, TaskOutcome(status, outputs=outputs), 2_000)
    assert not fx.stale


def test_join_task_context_reduces_in_declaration_order_of_the_requisites() -> None:
    # Declared z, a, m: the order the values appear in follows declaration, not ref_id.
    wf = Workflow.create(
        "app",
        "reduce",
        [
            stage("z"),
            stage("a"),
            stage("m"),
            stage(
                "join",
                ["a", "m", "z"],
                reducers={"v": "collect", "n": "sum", "best": "max", "d": "merge"},
            ),
        ],
    )
    start_workflow(wf, 1_000)
    finish(wf, "m", {"v": "m", "n": 1, "best": 3, "d": {"m": 1}})
    finish(wf, "a", {"v": "a", "n": 10, "best": 7, "d": {"a": 1, "m": 0}})
    finish(wf, "z", {"v": "z", "n": 100, "best": 5, "d": {"z": 1}})

    join = wf.stage_by_ref_id("join")
    assert join.status is S.RUNNING
    ctx = wf.task_context(join)
    assert ctx["v"] == ["z", "a", "m"]
    assert ctx["n"] == 111
    assert ctx["best"] == 7
    assert ctx["d"] == {"z": 1, "a": 1, "m": 1}


def test_join_task_context_includes_failed_continue_and_own_context_wins() -> None:
    join = stage("join", ["a", "b"], reducers={"v": "collect", "mine": "collect"})
    join.context["mine"] = "own"
    wf = Workflow.create("app", "reduce", [stage("a"), stage("b"), join])
    start_workflow(wf, 1_000)
    finish(wf, "a", {"v": 1, "mine": "from-a"})
    finish(wf, "b", {"v": 2}, status=S.FAILED_CONTINUE)

    ctx = wf.task_context(wf.stage_by_ref_id("join"))
    assert ctx["v"] == [1, 2]
    assert ctx["mine"] == "own"


def test_without_reducers_the_nearest_then_last_declared_upstream_wins() -> None:
    wf = Workflow.create("app", "plain", [stage("a"), stage("b"), stage("join", ["a", "b"])])
    start_workflow(wf, 1_000)
    finish(wf, "b", {"v": "b"})
    finish(wf, "a", {"v": "a"})
    assert wf.task_context(wf.stage_by_ref_id("join"))["v"] == "b"


def test_custom_reducer_applies_in_the_join_task_context() -> None:
    register_reducer("joined", lambda values: "+".join(values))
    wf = Workflow.create(
        "app",
        "custom",
        [stage("a"), stage("b"), stage("join", ["a", "b"], reducers={"v": "joined"})],
    )
    start_workflow(wf, 1_000)
    finish(wf, "a", {"v": "x"})
    finish(wf, "b", {"v": "y"})
    assert wf.task_context(wf.stage_by_ref_id("join"))["v"] == "x+y"
