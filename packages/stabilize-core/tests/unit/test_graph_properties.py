"""Properties of the graph validator (stabilize/models/graph.py) over generated stage graphs.

Graphs are drawn as DAGs (a stage may only require stages drawn before it, then the
declaration order is shuffled), and malformed ones are made from them by one or more
defects: a missing or duplicate ``ref_id``, a self-edge, an unknown requisite, a bad
N_OF_M threshold, or a cycle through chosen stages. The validator checks in passes (names,
then edges, then joins, then cycles), so the expected refusal is the first defect in that
order; ``expected_refusal`` states it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize.errors import CircularDependencyError, InvalidStageGraphError
from stabilize.models import StageExecution
from stabilize.models.graph import GraphIndex, _topological_order, validate_graph
from stabilize.models.stage import JoinType

SETTINGS = settings(max_examples=200, deadline=None)


@dataclass(frozen=True)
class Spec:
    """A stage to build: what the validator looks at, nothing else."""

    ref: str
    requires: frozenset[str] = frozenset()
    join: JoinType = JoinType.AND
    threshold: int = 0


def build(specs: Sequence[Spec]) -> list[StageExecution]:
    return [
        StageExecution(
            ref_id=s.ref,
            name=f"stage {s.ref}",
            requisite_stage_ref_ids=set(s.requires),
            join_type=s.join,
            join_threshold=s.threshold,
        )
        for s in specs
    ]


@st.composite
def dags(draw: st.DrawFn, min_size: int = 0, max_size: int = 12) -> list[Spec]:
    """A DAG in a shuffled declaration order; N_OF_M joins get a valid threshold."""
    size = draw(st.integers(min_size, max_size))
    names = draw(
        st.lists(
            st.sampled_from("abcdefghijklmnopqrstuvwxyz"), min_size=size, max_size=size, unique=True
        )
    )
    specs = []
    for i, ref in enumerate(names):
        requires = (
            frozenset(draw(st.sets(st.sampled_from(names[:i]), max_size=4))) if i else frozenset()
        )
        join = draw(st.sampled_from(JoinType)) if requires else JoinType.AND
        threshold = 0
        if join is JoinType.N_OF_M:
            threshold = draw(st.integers(1, len(requires)))
        specs.append(Spec(ref, requires, join, threshold))
    return draw(st.permutations(specs))


def lowest_position_order(specs: Sequence[Spec]) -> list[str]:
    """The reference order: always the earliest declared stage whose requisites are done."""
    done: list[str] = []
    left = list(specs)
    while left:
        nxt = next(s for s in left if s.requires <= set(done))
        done.append(nxt.ref)
        left.remove(nxt)
    return done


def on_a_cycle(specs: Sequence[Spec], ref: str) -> bool:
    """True when ``ref`` transitively requires itself."""
    by_ref = {s.ref: s for s in specs}
    seen: set[str] = set()
    stack = list(by_ref[ref].requires)
    while stack:
        current = stack.pop()
        if current == ref:
            return True
        if current not in seen and current in by_ref:
            seen.add(current)
            stack.extend(by_ref[current].requires)
    return False


def expected_refusal(specs: Sequence[Spec]) -> tuple[str, str | None] | None:
    """(kind, ref_id) of the refusal the validator owes, or None for a cycle or no defect."""
    seen: set[str] = set()
    for s in specs:
        if not s.ref:
            return "missing_ref", None
        if s.ref in seen:
            return "duplicate_ref", s.ref
        seen.add(s.ref)
    for s in specs:
        if s.ref in s.requires:
            return "self_edge", s.ref
        if not s.requires <= seen:
            return "unknown_ref", s.ref
    for s in specs:
        if s.join is JoinType.N_OF_M and not 1 <= s.threshold <= len(s.requires):
            return "bad_join_threshold", s.ref
    return None


# --- valid DAGs ---------------------------------------------------------------------------------


@SETTINGS
@given(dags())
@example([Spec("b", frozenset({"a"})), Spec("a")])
@example([Spec("c"), Spec("b"), Spec("a", frozenset({"b", "c"}))])
def test_a_dag_is_accepted_and_its_order_respects_every_edge(specs: list[Spec]) -> None:
    stages = build(specs)
    validate_graph(stages)

    order = [s.ref_id for s in _topological_order(stages)]
    assert sorted(order) == sorted(s.ref for s in specs)  # every stage, once
    position = {ref: i for i, ref in enumerate(order)}
    for s in specs:
        assert all(position[req] < position[s.ref] for req in s.requires)
    # Deterministic: ties go to the stage declared first, as they always have.
    assert order == lowest_position_order(specs)
    assert GraphIndex(stages).topo_position == position


# --- cycles -------------------------------------------------------------------------------------


@st.composite
def cyclic(draw: st.DrawFn) -> list[Spec]:
    """A DAG plus a ring of requisites through 1 or more of its stages (1: a self-edge is
    not what this draws, so a ring has at least 2 stages)."""
    specs = draw(dags(min_size=2))
    ring = draw(st.lists(st.sampled_from([s.ref for s in specs]), min_size=2, unique=True))
    extra = {ring[i]: ring[i - 1] for i in range(len(ring))}  # each requires the one before
    return [
        Spec(s.ref, s.requires | {extra[s.ref]}, s.join, s.threshold) if s.ref in extra else s
        for s in specs
    ]


@SETTINGS
@given(cyclic())
@example([Spec("a", frozenset({"b"})), Spec("b", frozenset({"a"}))])
@example(
    [
        Spec("after", frozenset({"y"})),
        Spec("x"),
        Spec("y", frozenset({"x", "z"})),
        Spec("z", frozenset({"y"})),
    ]
)
def test_a_cycle_is_refused_naming_a_stage_on_it(specs: list[Spec]) -> None:
    # A ring through an N_OF_M join may raise its threshold first: fix thresholds to valid.
    specs = [
        Spec(s.ref, s.requires, s.join, len(s.requires)) if s.join is JoinType.N_OF_M else s
        for s in specs
    ]
    with pytest.raises(CircularDependencyError) as info:
        validate_graph(build(specs))
    err = info.value
    assert err.kind == "cycle"
    assert on_a_cycle(specs, err.ref_id or "")
    cycle = err.cycle
    assert cycle[0] == cycle[-1] == err.ref_id
    assert len(set(cycle)) == len(cycle) - 1
    by_ref = {s.ref: s for s in specs}
    for before, after in itertools.pairwise(cycle):
        assert before in by_ref[after].requires  # in dependency order
    assert repr(err.ref_id)[1:-1] in str(err)


# --- other malformations ------------------------------------------------------------------------


@st.composite
def malformed(draw: st.DrawFn) -> list[Spec]:
    """A DAG with one or more defects that are not cycles (a cycle may come with them)."""
    specs = draw(dags(min_size=1))
    defects = draw(
        st.lists(
            st.sampled_from(["missing", "duplicate", "self", "unknown", "threshold"]),
            min_size=1,
            max_size=3,
        )
    )
    for defect in defects:
        i = draw(st.integers(0, len(specs) - 1))
        s = specs[i]
        if defect == "missing":
            specs[i] = Spec("", s.requires, s.join, s.threshold)
        elif defect == "duplicate":
            j = draw(st.integers(0, len(specs)))
            specs.insert(
                j, Spec(s.ref, frozenset(draw(st.sets(st.sampled_from("abc"), max_size=2))))
            )
        elif defect == "self":
            specs[i] = Spec(s.ref, s.requires | {s.ref}, s.join, s.threshold)
        elif defect == "unknown":
            specs[i] = Spec(s.ref, s.requires | {"missing-stage"}, s.join, s.threshold)
        else:
            bad = draw(st.sampled_from([0, -1, len(s.requires) + 1, len(s.requires) + 5]))
            specs[i] = Spec(s.ref, s.requires, JoinType.N_OF_M, bad)
    return specs


@SETTINGS
@given(malformed())
@example([Spec("")])
@example([Spec("a"), Spec("a")])
@example([Spec("a", frozenset({"a", "zz"}))])  # a self-edge is named before an unknown ref
@example([Spec("a", frozenset({"b"}), JoinType.N_OF_M, 2), Spec("b")])
@example([Spec("a", frozenset(), JoinType.N_OF_M, 0)])
def test_malformed_graphs_are_refused_with_the_right_kind_and_stage(specs: list[Spec]) -> None:
    expected = expected_refusal(specs)
    if expected is None:  # the defects happened to cancel out, or only a cycle is left
        with contextlib.suppress(CircularDependencyError):
            validate_graph(build(specs))
        return
    kind, ref = expected
    with pytest.raises(InvalidStageGraphError) as info:
        validate_graph(build(specs))
    err = info.value
    assert (err.kind, err.ref_id) == (kind, ref)
    assert not isinstance(err, CircularDependencyError)
    if ref is not None:
        assert repr(ref) in str(err)
    else:
        position = next(i for i, s in enumerate(specs) if not s.ref)
        assert f"stage #{position} " in str(err)


# --- anything at all ----------------------------------------------------------------------------

REFS = st.sampled_from(["", "a", "b", "c", "d", "e"])


@SETTINGS
@given(
    st.lists(
        st.builds(
            Spec,
            REFS,
            st.frozensets(REFS, max_size=4),
            st.sampled_from(JoinType),
            st.integers(-2, 6),
        ),
        max_size=8,
    )
)
@example([Spec("a", frozenset({""}))])
@example([Spec("a", frozenset({"b"})), Spec("b", frozenset({"a"}), JoinType.N_OF_M, 5)])
def test_validation_raises_only_graph_errors(specs: list[Spec]) -> None:
    expected = expected_refusal(specs)
    error: InvalidStageGraphError | None = None
    try:
        validate_graph(build(specs))
    except InvalidStageGraphError as exc:  # any other exception fails the test
        error = exc
    if error is None:
        assert expected is None
        order = [s.ref_id for s in _topological_order(build(specs))]
        assert order == lowest_position_order(specs)
    elif isinstance(error, CircularDependencyError):
        assert expected is None
        assert on_a_cycle(specs, error.ref_id or "")
    else:
        assert (error.kind, error.ref_id) == expected
