"""validate_graph and GraphIndex (models/graph.py)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from stabilize.errors import (
    CircularDependencyError,
    InvalidStageGraphError,
    WorkflowValidationError,
)
from stabilize.models import StageExecution, WorkflowStatus
from stabilize.models.graph import GraphIndex, validate_graph

S = WorkflowStatus


def node(
    ref: str, requires: Iterable[str] = (), status: WorkflowStatus = S.NOT_STARTED
) -> StageExecution:
    return StageExecution(
        ref_id=ref, name=f"stage {ref}", requisite_stage_ref_ids=set(requires), status=status
    )


def refs(stages: Iterable[StageExecution]) -> list[str]:
    return [s.ref_id for s in stages]


# --- validate_graph ---------------------------------------------------------------------------


def test_valid_graph_passes() -> None:
    validate_graph([node("a"), node("b", ["a"]), node("c", ["a"]), node("d", ["b", "c"])])
    validate_graph([])


def test_missing_ref_names_the_stage_position_and_name() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        validate_graph([node("a"), StageExecution(ref_id="", name="build")])
    err = info.value
    assert err.kind == "missing_ref"
    assert err.ref_id is None
    assert "stage #1 (build) has no ref_id" in str(err)


def test_missing_ref_without_a_name_falls_back_to_type_then_unnamed() -> None:
    with pytest.raises(InvalidStageGraphError, match=r"stage #0 \(deploy\)"):
        validate_graph([StageExecution(ref_id="", type="deploy")])
    with pytest.raises(InvalidStageGraphError, match=r"stage #0 \(unnamed\)"):
        validate_graph([StageExecution(ref_id="")])


def test_duplicate_ref() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        validate_graph([node("a"), node("b"), node("a")])
    err = info.value
    assert err.kind == "duplicate_ref"
    assert err.ref_id == "a"
    assert "'a'" in str(err)
    assert "duplicate" in str(err)


def test_self_edge() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        validate_graph([node("a"), node("b", ["a", "b"])])
    err = info.value
    assert err.kind == "self_edge"
    assert err.ref_id == "b"
    assert "'b' lists itself" in str(err)


def test_unknown_ref_names_the_stage_and_the_missing_requisite() -> None:
    with pytest.raises(InvalidStageGraphError) as info:
        validate_graph([node("a"), node("b", ["a", "ghost"])])
    err = info.value
    assert err.kind == "unknown_ref"
    assert err.ref_id == "b"
    assert "stage 'b' requires unknown stage 'ghost'" in str(err)


def test_graph_errors_are_validation_and_value_errors() -> None:
    with pytest.raises(WorkflowValidationError):
        validate_graph([node("a"), node("a")])
    with pytest.raises(ValueError, match="duplicate"):
        validate_graph([node("a"), node("a")])


def test_cycle_reports_its_path_in_dependency_order() -> None:
    # a requires c, b requires a, c requires b: a -> b -> c -> a
    with pytest.raises(CircularDependencyError) as info:
        validate_graph([node("a", ["c"]), node("b", ["a"]), node("c", ["b"])])
    err = info.value
    assert err.cycle == ["a", "b", "c", "a"]
    assert err.kind == "cycle"
    assert err.ref_id == "a"
    assert str(err) == "circular dependency between stages: a -> b -> c -> a"
    assert isinstance(err, InvalidStageGraphError)


def test_cycle_path_leaves_out_stages_before_and_after_the_cycle() -> None:
    stages = [
        node("after", ["y"]),  # downstream of the cycle, declared first
        node("x"),  # upstream of the cycle, acyclic
        node("y", ["x", "z"]),
        node("z", ["y"]),
    ]
    with pytest.raises(CircularDependencyError) as info:
        validate_graph(stages)
    cycle = info.value.cycle
    assert cycle[0] == cycle[-1]
    assert set(cycle) == {"y", "z"}
    assert len(cycle) == 3
    assert "after" not in cycle
    assert "x" not in cycle


def test_two_stage_cycle() -> None:
    with pytest.raises(CircularDependencyError) as info:
        validate_graph([node("a", ["b"]), node("b", ["a"])])
    assert info.value.cycle in (["a", "b", "a"], ["b", "a", "b"])


# --- GraphIndex -------------------------------------------------------------------------------


def diamond_with_tail() -> list[StageExecution]:
    # a -> b -> d -> e, a -> c -> d, x (isolated)
    return [
        node("a"),
        node("c", ["a"]),
        node("b", ["a"]),
        node("x"),
        node("d", ["c", "b"]),
        node("e", ["d"]),
    ]


def test_lookups_and_direct_edges() -> None:
    stages = diamond_with_tail()
    index = GraphIndex(stages)
    assert index.by_ref["d"] is stages[4]
    assert index.by_id[stages[4].id] is stages[4]
    assert refs(index.upstream["d"]) == ["b", "c"]  # sorted by ref_id
    assert refs(index.upstream["a"]) == []
    assert sorted(refs(index.downstream["a"])) == ["b", "c"]
    assert refs(index.downstream["e"]) == []


def test_topo_position_respects_edges_and_declaration_order() -> None:
    index = GraphIndex(diamond_with_tail())
    pos = index.topo_position
    order = sorted(pos, key=pos.__getitem__)
    assert order == ["a", "c", "b", "x", "d", "e"]


def test_ancestors_are_transitive_and_in_topological_order() -> None:
    index = GraphIndex(diamond_with_tail())
    assert refs(index.ancestors("e")) == ["a", "c", "b", "d"]
    assert refs(index.ancestors("d")) == ["a", "c", "b"]
    assert refs(index.ancestors("b")) == ["a"]
    assert index.ancestors("a") == []
    assert index.ancestors("x") == []


def test_ancestors_farthest_first_even_when_declared_last() -> None:
    index = GraphIndex([node("c", ["b"]), node("b", ["a"]), node("a")])
    assert refs(index.ancestors("c")) == ["a", "b"]


def test_descendants() -> None:
    index = GraphIndex(diamond_with_tail())
    assert index.descendants("a") == {"b", "c", "d", "e"}
    assert index.descendants("b") == {"d", "e"}
    assert index.descendants("e") == set()
    assert index.descendants("x") == set()


def test_pending_upstream_counts_incomplete_requisites() -> None:
    stages = [
        node("a", status=S.SUCCEEDED),
        node("b", status=S.RUNNING),
        node("c", status=S.SKIPPED),
        node("j", ["a", "b", "c"]),
        node("k", ["a", "c"]),
        node("root"),
    ]
    index = GraphIndex(stages)
    assert index.pending_upstream == {"a": 0, "b": 0, "c": 0, "j": 1, "k": 0, "root": 0}


@pytest.mark.parametrize(
    ("status", "active"),
    [
        (S.RUNNING, True),
        (S.SUSPENDED, True),
        (S.PAUSED, True),
        (S.NOT_STARTED, False),
        (S.SUCCEEDED, False),
        (S.TERMINAL, False),
        (S.CANCELED, False),
        (S.SKIPPED, False),
        (S.FAILED_CONTINUE, False),
    ],
    ids=str,
)
def test_active_holds_ids_of_running_suspended_and_paused_stages(
    status: WorkflowStatus, active: bool
) -> None:
    stage = node("a", status=status)
    index = GraphIndex([stage, node("b", status=S.RUNNING)])
    assert (stage.id in index.active) is active
    assert index.by_ref["b"].id in index.active


# --- instances of a dynamic fan-out (issue 19) ------------------------------------------------


def instance(generation: str, i: int, status: WorkflowStatus = S.NOT_STARTED) -> StageExecution:
    return StageExecution(
        id=f"{generation}.{i}",
        ref_id=f"f[{i}]@{generation}",
        parent_stage_id=generation.split(".")[0],
        mi_index=i,
        status=status,
    )


def test_instances_are_grouped_by_run_in_item_order_with_their_counters() -> None:
    fan = StageExecution(id="F", ref_id="f", mi_generation="F.7")
    stages = [
        fan,
        instance("F.3", 0, S.SUCCEEDED),  # an earlier run (a loop ran the fan-out again)
        instance("F.7", 2, S.RUNNING),
        instance("F.7", 0, S.SUCCEEDED),
        instance("F.7", 1, S.FAILED_CONTINUE),
        instance("F.7", 3, S.TERMINAL),
        instance("F.7", 4),
        instance("F.7", 5, S.SUSPENDED),
    ]
    index = GraphIndex(stages)
    group = index.instance_group(fan)
    assert group is not None
    assert [s.mi_index for s in index.instances(fan)] == [0, 1, 2, 3, 4, 5]
    assert (group.finished, group.succeeded, group.running) == (3, 2, 2)
    assert group.next_not_started() is stages[6]
    assert group.next_not_started() is None
    assert [s.id for s in index.instance_groups["F.3"].stages] == ["F.3.0"]
    assert index.instances(StageExecution(ref_id="g")) == []  # never expanded


def test_instance_counters_follow_status_changes_and_a_reset_rescans() -> None:
    fan = StageExecution(id="F", ref_id="f", mi_generation="F.1")
    index = GraphIndex([fan])
    added = [instance("F.1", i) for i in range(3)]
    for stage in added:
        index.add(stage)
    group = index.instance_group(fan)
    assert group is not None
    assert group.next_not_started() is added[0]
    changes = [
        (added[0], S.RUNNING),
        (added[0], S.SUCCEEDED),
        (added[1], S.RUNNING),
        (added[1], S.NOT_STARTED),  # a jump reset it
    ]
    for stage, status in changes:
        old, stage.status = stage.status, status
        index.instance_status_changed(stage, old, status)
    assert (group.finished, group.succeeded, group.running) == (1, 1, 0)
    assert group.next_not_started() is added[1]
    assert group.next_not_started() is added[2]
    ordinary = node("x")
    index.instance_status_changed(ordinary, S.NOT_STARTED, S.RUNNING)  # not an instance
    assert (group.finished, group.succeeded, group.running) == (1, 1, 0)
