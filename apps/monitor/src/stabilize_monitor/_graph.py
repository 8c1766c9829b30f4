"""A workflow's stage graph as lines of text: order, depth, join progress, frontier."""

from __future__ import annotations

from dataclasses import dataclass

from stabilize.models.stage import JoinType, StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow

ACTIVE = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED, WorkflowStatus.PAUSED})


@dataclass(frozen=True)
class GraphLine:
    """One stage of the graph, placed.

    Attributes:
        stage: The stage.
        depth: Its distance from a first stage along the longest path of requisites.
        after: The ``ref_id`` of its requisites, sorted.
        join: Its join's progress (``2 of 3 N_OF_M``), or "" for fewer than two requisites.
    """

    stage: StageExecution
    depth: int
    after: tuple[str, ...]
    join: str


def graph_lines(workflow: Workflow) -> list[GraphLine]:
    """The stages in an order where each comes after its requisites, with their depth.

    Stages a parent stage created (``parent_stage_id``) follow their parent, one level in.
    """
    by_ref = {s.ref_id: s for s in workflow.stages}
    by_id = {s.id: s for s in workflow.stages}
    depth: dict[str, int] = {}

    def depth_of(ref: str, seen: frozenset[str] = frozenset()) -> int:
        if ref in depth:
            return depth[ref]
        stage = by_ref[ref]
        ups = [r for r in stage.requisite_stage_ref_ids if r in by_ref and r not in seen]
        found = 1 + max((depth_of(r, seen | {ref}) for r in ups), default=-1)
        parent = by_id.get(stage.parent_stage_id) if stage.parent_stage_id else None
        if parent is not None and parent.ref_id not in seen:
            found = max(found, depth_of(parent.ref_id, seen | {ref}) + 1)
        depth[ref] = found
        return found

    for stage in workflow.stages:
        depth_of(stage.ref_id)
    position = {s.ref_id: i for i, s in enumerate(workflow.stages)}
    ordered = sorted(workflow.stages, key=lambda s: (depth[s.ref_id], position[s.ref_id]))
    return [
        GraphLine(
            stage=s,
            depth=depth[s.ref_id],
            after=tuple(sorted(s.requisite_stage_ref_ids)),
            join=join_progress(workflow, s),
        )
        for s in ordered
    ]


def join_progress(workflow: Workflow, stage: StageExecution) -> str:
    """``done of needed`` requisites for a stage with several, e.g. ``2 of 3 N_OF_M``."""
    ups = [s for s in workflow.stages if s.ref_id in stage.requisite_stage_ref_ids]
    if len(ups) < 2:
        return ""
    succeeded = sum(
        1 for s in ups if s.status.is_successful or s.status is WorkflowStatus.FAILED_CONTINUE
    )
    if stage.join_type is JoinType.N_OF_M:
        needed = stage.join_threshold or len(ups)
    elif stage.join_type is JoinType.DISCRIMINATOR:
        needed = 1
    else:
        needed = len(ups)
    text = f"{min(succeeded, needed)} of {needed}"
    if needed != len(ups):
        text += f" (of {len(ups)})"
    return f"{text} {stage.join_type.value}"


def frontier(workflow: Workflow) -> list[str]:
    """The ``ref_id`` of the stages running, suspended or paused now."""
    return [s.ref_id for s in workflow.stages if s.status in ACTIVE]
