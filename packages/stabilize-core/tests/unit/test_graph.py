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
    # cached: the same list comes back
    assert index.ancestors("e") is index.ancestors("e")


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
