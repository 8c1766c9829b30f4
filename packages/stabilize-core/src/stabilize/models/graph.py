"""Graph checks and the derived index of a workflow's stages (pure, no I/O)."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from stabilize.errors import CircularDependencyError, InvalidStageGraphError
from stabilize.expressions import ExpressionError, compile_expression
from stabilize.models.stage import JoinType, SplitType, StageExecution
from stabilize.models.status import WorkflowStatus

_ACTIVE = frozenset(
    {
        WorkflowStatus.RUNNING,
        WorkflowStatus.SUSPENDED,
        WorkflowStatus.PAUSED,
        WorkflowStatus.BUFFERED,
    }
)
"""Stage statuses that keep a workflow from completing."""

_SUCCEEDED = frozenset({WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED_CONTINUE})
"""Statuses of an instance that count towards its fan-out's join."""

_NO_OUTPUTS: Mapping[str, Any] = MappingProxyType({})


def validate_graph(stages: Sequence[StageExecution]) -> None:
    """Refuse a malformed stage graph with an error that names the stage.

    Raises:
        InvalidStageGraphError: a missing or duplicate ``ref_id``, a stage that requires
            itself, or a requisite that names no stage.
        CircularDependencyError: the requisites form a cycle.
    """
    seen: set[str] = set()
    for index, stage in enumerate(stages):
        if not stage.ref_id:
            raise InvalidStageGraphError(
                f"stage #{index} ({stage.name or stage.type or 'unnamed'}) has no ref_id",
                kind="missing_ref",
            )
        if stage.ref_id in seen:
            raise InvalidStageGraphError(
                f"duplicate ref_id {stage.ref_id!r}: every stage needs its own",
                kind="duplicate_ref",
                ref_id=stage.ref_id,
            )
        seen.add(stage.ref_id)
    for stage in stages:
        if stage.ref_id in stage.requisite_stage_ref_ids:
            raise InvalidStageGraphError(
                f"stage {stage.ref_id!r} lists itself in requisite_stage_ref_ids",
                kind="self_edge",
                ref_id=stage.ref_id,
            )
        for req in sorted(stage.requisite_stage_ref_ids):
            if req not in seen:
                raise InvalidStageGraphError(
                    f"stage {stage.ref_id!r} requires unknown stage {req!r}",
                    kind="unknown_ref",
                    ref_id=stage.ref_id,
                )
    children: dict[str, set[str]] = {s.ref_id: set() for s in stages}
    for stage in stages:
        for req in stage.requisite_stage_ref_ids:
            children[req].add(stage.ref_id)
    for stage in stages:
        _validate_flow(stage, children[stage.ref_id])
        milestone = stage.milestone_ref_id
        if milestone is not None and (milestone == stage.ref_id or milestone not in seen):
            raise InvalidStageGraphError(
                f"stage {stage.ref_id!r}: milestone_ref_id {milestone!r} must name another stage",
                kind="bad_milestone",
                ref_id=stage.ref_id,
            )
    _topological_order(stages)


def _validate_flow(stage: StageExecution, children: set[str]) -> None:
    """Check a stage's join and split settings and its condition expressions."""
    ref = stage.ref_id
    mi = stage.mi_config
    if mi is not None and (
        not mi.items_key or not stage.tasks or mi.max_concurrency < 0 or mi.join_threshold < 0
    ):
        raise InvalidStageGraphError(
            f"stage {ref!r}: mi_config needs an items_key, tasks to run per item, and "
            "max_concurrency and join_threshold of at least 0",
            kind="bad_multi_instance",
            ref_id=ref,
        )
    if stage.join_type is JoinType.N_OF_M:
        n = len(stage.requisite_stage_ref_ids)
        if not 1 <= stage.join_threshold <= n:
            raise InvalidStageGraphError(
                f"stage {ref!r}: join_threshold must be between 1 and its {n} requisites "
                f"for an N_OF_M join, got {stage.join_threshold}",
                kind="bad_join_threshold",
                ref_id=ref,
            )
    conditions: dict[str, object] = dict(stage.split_conditions)
    if conditions and stage.split_type is not SplitType.OR:
        raise InvalidStageGraphError(
            f"stage {ref!r}: split_conditions need split_type=SplitType.OR",
            kind="bad_split_condition",
            ref_id=ref,
        )
    enabled = stage.context.get("stageEnabled")
    for target in conditions:
        if target not in children:
            raise InvalidStageGraphError(
                f"stage {ref!r}: split_conditions names {target!r}, which does not require {ref!r}",
                kind="bad_split_condition",
                ref_id=ref,
            )
    if enabled is not None:
        conditions["stageEnabled"] = enabled
    for target, condition in conditions.items():
        source = condition.get("expression") if isinstance(condition, dict) else condition
        if isinstance(source, bool):
            continue
        if not isinstance(source, str):
            raise InvalidStageGraphError(
                f"stage {ref!r}: condition for {target!r} must be a bool or an expression "
                f"string, not {type(source).__name__}",
                kind="bad_expression",
                ref_id=ref,
            )
        try:
            compile_expression(source)
        except ExpressionError as exc:
            raise InvalidStageGraphError(
                f"stage {ref!r}: condition for {target!r}: {exc}", kind="bad_expression", ref_id=ref
            ) from None


def _topological_order(stages: Sequence[StageExecution]) -> list[StageExecution]:
    """Kahn's algorithm; ties keep declaration order so the result is deterministic.

    The ready stages wait in a heap of declaration positions: the earliest declared ready
    stage comes next, in O(log n) per stage (issue 13: re-sorting a list of ready stages
    on every pop made a wide graph cost O(n²)).
    """
    pending = [len(s.requisite_stage_ref_ids) for s in stages]
    position = {s.ref_id: i for i, s in enumerate(stages)}
    children: list[list[int]] = [[] for _ in stages]
    for i, s in enumerate(stages):
        for req in s.requisite_stage_ref_ids:
            children[position[req]].append(i)
    ready = [i for i, count in enumerate(pending) if count == 0]  # ascending: a valid heap
    order: list[StageExecution] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(stages[i])
        for child in children[i]:
            pending[child] -= 1
            if pending[child] == 0:
                heapq.heappush(ready, child)
    if len(order) != len(stages):
        raise CircularDependencyError(_find_cycle(stages, {s.ref_id for s in order}))
    return order


def _find_cycle(stages: Sequence[StageExecution], acyclic: set[str]) -> list[str]:
    by_ref = {s.ref_id: s for s in stages}
    for start in stages:
        if start.ref_id in acyclic:
            continue
        path: list[str] = []
        on_path: set[str] = set()
        node = start.ref_id
        # Every stage left over has at least one requisite that is left over too, so
        # walking such requisites must revisit a node: that loop is a cycle.
        while node not in on_path:
            path.append(node)
            on_path.add(node)
            node = min(r for r in by_ref[node].requisite_stage_ref_ids if r not in acyclic)
        cycle = [*path[path.index(node) :], node]
        cycle.reverse()
        return cycle
    raise AssertionError("no cycle found")  # pragma: no cover


@dataclass(eq=False)
class InstanceGroup:
    """The instances of one run of a dynamic fan-out, and how many are where.

    The counters are kept in step by :meth:`GraphIndex.instance_status_changed` (which
    ``engine._flow.mark_stage`` calls), so that each instance's completion costs O(1)
    instead of a count over every instance (issue 19).

    Attributes:
        stages: The instances, in item order.
        finished: How many have a complete status.
        succeeded: How many ended SUCCEEDED or FAILED_CONTINUE.
        running: How many are in an active status (running, suspended, paused, buffered).
        next_start: No instance before this position is NOT_STARTED.
    """

    stages: list[StageExecution] = field(default_factory=list)
    finished: int = 0
    succeeded: int = 0
    running: int = 0
    next_start: int = 0

    def count(self, status: WorkflowStatus, sign: int) -> None:
        """Add (``sign`` 1) or remove (-1) one instance in ``status`` to the counters."""
        if status.is_complete:
            self.finished += sign
        if status in _SUCCEEDED:
            self.succeeded += sign
        if status in _ACTIVE:
            self.running += sign

    def next_not_started(self) -> StageExecution | None:
        """The first NOT_STARTED instance in item order, for the caller to start.

        The position moves past it: a caller that does not start it must reset
        ``next_start``.

        Amortised O(1): instances start in item order, so the position only moves back
        when an instance is reset to NOT_STARTED (see
        :meth:`GraphIndex.instance_status_changed`).
        """
        stages = self.stages
        while self.next_start < len(stages):
            stage = stages[self.next_start]
            self.next_start += 1
            if stage.status is WorkflowStatus.NOT_STARTED:
                return stage
        return None


def instance_generation(stage: StageExecution) -> str | None:
    """The run of a fan-out ``stage`` is an instance of (its ``mi_generation``), if any.

    An instance's id is ``<generation>.<position>`` (see ``engine._fanout``).
    """
    if stage.parent_stage_id is None or stage.mi_index is None:
        return None
    generation, dot, _ = stage.id.rpartition(".")
    return generation if dot else None


class GraphIndex:
    """Lookups derived from a workflow's stages, built once and cached on the workflow.

    Nothing here is persisted: it is rebuilt from the stages whenever a workflow is loaded.
    """

    def __init__(self, stages: Sequence[StageExecution]) -> None:
        self.by_ref: dict[str, StageExecution] = {s.ref_id: s for s in stages}
        self.by_id: dict[str, StageExecution] = {s.id: s for s in stages}
        self.downstream: dict[str, list[StageExecution]] = {s.ref_id: [] for s in stages}
        self.upstream: dict[str, list[StageExecution]] = {}
        for s in stages:
            self.upstream[s.ref_id] = [
                self.by_ref[r] for r in sorted(s.requisite_stage_ref_ids) if r in self.by_ref
            ]
            for up in self.upstream[s.ref_id]:
                self.downstream[up.ref_id].append(s)
        order = _topological_order(stages)
        self.topo_position: dict[str, int] = {s.ref_id: i for i, s in enumerate(order)}
        # What each stage passes on to a child (see upstream_outputs), by ref_id, and the
        # stages whose outputs some cached merge includes.
        self._passed: dict[str, Mapping[str, Any]] = {}
        self._merged_from: set[str] = set()
        # Status counters kept in step by engine._flow.mark_stage, so that join and
        # completion checks cost O(1) per transition instead of a scan of the graph.
        self.pending_upstream: dict[str, int] = {
            s.ref_id: sum(1 for up in self.upstream[s.ref_id] if not up.status.is_complete)
            for s in stages
        }
        self.active: set[str] = {s.id for s in stages if s.status in _ACTIVE}
        # Ready stages waiting for their milestone stage to reach its state.
        self.milestone_waiting: set[str] = {
            s.ref_id
            for s in stages
            if s.status is WorkflowStatus.NOT_STARTED and s.status_reason == "waiting_for_milestone"
        }
        # The instances of each run of a dynamic fan-out, by its mi_generation.
        self.instance_groups: dict[str, InstanceGroup] = {}
        self._group_of: dict[str, InstanceGroup] = {}
        for s in stages:
            self._add_instance(s)
        for group in self.instance_groups.values():
            group.stages.sort(key=lambda s: s.mi_index or 0)

    def ancestors(self, ref_id: str) -> list[StageExecution]:
        """All transitive requisites of a stage, in topological order (farthest first).

        Computed on each call (iteratively: a chain of any length works) in
        O(a log a) for ``a`` ancestors; nothing per stage is kept, so a long chain costs
        no quadratic memory.
        """
        found: set[str] = set()
        stack = [ref_id]
        upstream = self.upstream
        while stack:
            for parent in upstream[stack.pop()]:
                if parent.ref_id not in found:
                    found.add(parent.ref_id)
                    stack.append(parent.ref_id)
        by_ref = self.by_ref
        position = self.topo_position
        return [by_ref[r] for r in sorted(found, key=position.__getitem__)]

    def upstream_outputs(self, ref_id: str) -> Mapping[str, Any]:
        """The outputs of every ancestor of a stage merged in topological order.

        Nearer ancestors override farther ones (ties keep declaration order): what
        :meth:`Workflow.task_context` layers between the workflow's context and the
        stage's own. The result may be shared: do not change it.

        A stage with one requisite sees what its parent passes on (the parent's own
        upstream merge with the parent's outputs on top), which is cached once per
        parent: a stage deep in a chain, or one of 10,000 branches under one root, costs
        what the outputs cost, not its depth or its siblings (issue 19). A stage with
        several requisites (a join) merges its ancestors afresh. A change of an
        ancestor's outputs made through :meth:`StageExecution.update_outputs` or
        :meth:`StageExecution.reset` drops the cached merges (see :meth:`outputs_changed`).
        """
        parents = self.upstream[ref_id]
        if len(parents) == 1:
            return self._passed_on(parents[0].ref_id)
        return self._merge_ancestors(ref_id) if parents else _NO_OUTPUTS

    def _passed_on(self, ref_id: str) -> Mapping[str, Any]:
        """What a stage passes on to a child: its upstream merge, its outputs on top."""
        cache = self._passed
        pending: list[str] = []  # nearest first
        ref = ref_id
        while True:
            found = cache.get(ref)
            if found is not None:
                merged = found
                break
            pending.append(ref)
            parents = self.upstream[ref]
            if len(parents) != 1:
                merged = self._merge_ancestors(ref) if parents else _NO_OUTPUTS
                break
            ref = parents[0].ref_id
        for ref in reversed(pending):
            stage = self.by_ref[ref]
            if stage.outputs:
                merged = {**merged, **stage.outputs}
            self._merged_from.add(ref)
            cache[ref] = merged
            parents = self.upstream[ref]
            if len(parents) == 1 and len(self.downstream[parents[0].ref_id]) == 1:
                # Its only child passes the merge on now: keeping both would hold a
                # chain's outputs once per stage.
                cache.pop(parents[0].ref_id, None)
        return merged

    def _merge_ancestors(self, ref_id: str) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for ancestor in self.ancestors(ref_id):
            if ancestor.outputs:
                merged.update(ancestor.outputs)
            self._merged_from.add(ancestor.ref_id)
        return merged

    def outputs_changed(self, ref_id: str) -> None:
        """Forget the cached merges of :meth:`upstream_outputs` that include this stage."""
        if ref_id in self._merged_from:
            self._passed.clear()
            self._merged_from.clear()

    def add(self, stage: StageExecution) -> None:
        """Index a stage added at run time (an instance of a dynamic fan-out)."""
        self.by_ref[stage.ref_id] = stage
        self.by_id[stage.id] = stage
        self.upstream[stage.ref_id] = [
            self.by_ref[r] for r in sorted(stage.requisite_stage_ref_ids) if r in self.by_ref
        ]
        self.downstream[stage.ref_id] = []
        for up in self.upstream[stage.ref_id]:
            self.downstream[up.ref_id].append(stage)
        self.topo_position[stage.ref_id] = len(self.topo_position)
        self.pending_upstream[stage.ref_id] = sum(
            1 for up in self.upstream[stage.ref_id] if not up.status.is_complete
        )
        if stage.status in _ACTIVE:
            self.active.add(stage.id)
        self._add_instance(stage)

    def _add_instance(self, stage: StageExecution) -> None:
        generation = instance_generation(stage)
        if generation is None:
            return
        group = self.instance_groups.get(generation)
        if group is None:
            group = self.instance_groups[generation] = InstanceGroup()
        group.stages.append(stage)
        group.count(stage.status, 1)
        self._group_of[stage.id] = group

    def instances(self, fan_out: StageExecution) -> list[StageExecution]:
        """The instances of the current run of a fan-out stage, in item order.

        Args:
            fan_out: A stage with ``mi_config``.

        Returns:
            The instances (the index's own list: do not change it), or an empty list
            before the stage has expanded.
        """
        group = self.instance_group(fan_out)
        return group.stages if group is not None else []

    def instance_group(self, fan_out: StageExecution) -> InstanceGroup | None:
        """The instances of the current run of a fan-out stage with their counters."""
        if fan_out.mi_generation is None:
            return None
        return self.instance_groups.get(fan_out.mi_generation)

    def instance_status_changed(
        self, stage: StageExecution, old: WorkflowStatus, new: WorkflowStatus
    ) -> None:
        """Keep the counters of a fan-out's instances in step with a stage's new status.

        Args:
            stage: Any stage (nothing happens unless it is an instance of a fan-out).
            old: Its status before.
            new: Its status now.
        """
        group = self._group_of.get(stage.id)
        if group is None or old is new:
            return
        group.count(old, -1)
        group.count(new, 1)
        if new is WorkflowStatus.NOT_STARTED:
            # Rare (a jump that resets an instance): the next look scans from the start.
            group.next_start = 0

    def descendants(self, ref_id: str) -> set[str]:
        """The ``ref_id`` of every stage that transitively depends on this one."""
        found: set[str] = set()
        stack = [s.ref_id for s in self.downstream[ref_id]]
        while stack:
            ref = stack.pop()
            if ref not in found:
                found.add(ref)
                stack.extend(s.ref_id for s in self.downstream[ref])
        return found
