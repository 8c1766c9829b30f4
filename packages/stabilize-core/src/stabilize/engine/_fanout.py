"""Dynamic fan-out inside a transition: one instance stage per item of a list."""

from __future__ import annotations

import stabilize.engine._flow as flow
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
from stabilize.records import Effects
from stabilize.reducers import apply_output_reducers

S = WorkflowStatus


def _expand(wf: Workflow, stage: StageExecution, now: int, fx: Effects) -> None:
    """Dynamic fan-out: add one instance stage per item and start as many as allowed."""
    config = stage.mi_config
    assert config is not None
    items = wf.task_context(stage).get(config.items_key)
    if not isinstance(items, list):
        message = (
            f"stage {stage.ref_id!r}: mi_config.items_key {config.items_key!r} must name a "
            f"list in the stage's context, found {type(items).__name__}"
        )
        flow._complete_stage(wf, stage, S.TERMINAL, now, fx, error=message)
        return
    # Instance ids derive from the workflow version: unique per expansion, deterministic.
    generation = f"{stage.id}.{wf.version}"
    stage.mi_generation = generation
    if not items:
        stage.update_outputs({"instances": []})
        flow._complete_stage(wf, stage, S.SUCCEEDED, now, fx, error=None)
        return
    for i, item in enumerate(items):
        inst_id = f"{generation}.{i}"
        ref = f"{stage.ref_id}[{i}]"
        if ref in wf.index.by_ref:  # a fan-out run again by a loop
            ref = f"{ref}@{wf.version}"
        instance = StageExecution(
            id=inst_id,
            ref_id=ref,
            type=stage.type,
            name=f"{stage.name or stage.ref_id} [{i}]",
            # The fan-out stage's own values, shared, not copied: the stored row of the
            # instance keeps only what differs from them (StageExecution.to_row, issue 19).
            context={**stage.context, config.item_key: item},
            mi_index=i,
            tasks=[
                TaskExecution(
                    id=f"{inst_id}.{j}",
                    name=t.name,
                    implementing_class=t.implementing_class,
                    stage_start=t.stage_start,
                    stage_end=t.stage_end,
                )
                for j, t in enumerate(stage.tasks)
            ],
            requisite_stage_ref_ids=set(stage.requisite_stage_ref_ids),
            parent_stage_id=stage.id,
        )
        instance._workflow = wf
        wf.stages.append(instance)
        wf.index.add(instance)
        fx.new_stages.append(instance)
    fx.emit(EventType.STAGE_EXPANDED, "stage", stage.id, instances=len(items))
    _advance(wf, stage, now, fx)


def _instances(wf: Workflow, parent: StageExecution) -> list[StageExecution]:
    """The instances of the fan-out stage's current run, in item order."""
    return wf.index.instances(parent)


def _instance_done(wf: Workflow, parent: StageExecution, now: int, fx: Effects) -> None:
    """An instance of a fan-out finished: start the next, or complete the fan-out stage."""
    _advance(wf, parent, now, fx)


def _advance(wf: Workflow, parent: StageExecution, now: int, fx: Effects) -> None:
    """Start instances up to the concurrency limit, or complete the fan-out stage.

    The index's counters (:class:`~stabilize.models.graph.InstanceGroup`) make this O(1)
    per instance, amortised: no count or scan over the instances until the join is
    decided (issue 19).
    """
    config = parent.mi_config
    if config is None or not _open(wf, parent):
        return
    group = wf.index.instance_group(parent)
    if group is None:
        return
    instances = group.stages
    need = config.join_threshold or len(instances)
    limit = config.max_concurrency or len(instances)
    # Starting an instance can end it at once (stageEnabled) and come back here: the
    # counters are live, so each look starts only what the limit still allows.
    while group.succeeded < need and group.finished < len(instances) and group.running < limit:
        instance = group.next_not_started()
        if instance is None:
            break
        flow._start_stage(wf, instance, now, fx)
        if not _open(wf, parent):
            return
    if group.succeeded < need and group.finished < len(instances):
        return
    succeeded = [s for s in instances if s.status in (S.SUCCEEDED, S.FAILED_CONTINUE)]
    for instance in instances:
        if instance.id in wf.index.active:
            flow._cancel_stage(wf, instance, "straggler", now, fx)
        elif instance.status is S.NOT_STARTED:
            flow.mark_stage(wf, instance, S.SKIPPED, fx)
            instance.status_reason = "withdrawn"
            fx.touch(instance)
    if len(succeeded) < need:
        message = (
            f"stage {parent.ref_id!r}: {need} of its {len(instances)} instances had to "
            f"succeed, but only {len(succeeded)} did"
        )
        flow._complete_stage(wf, parent, S.TERMINAL, now, fx, error=message)
        return
    winners = {s.id for s in succeeded}
    parent.update_outputs(
        {"instances": [s.outputs if s.id in winners else None for s in instances]}
    )
    if parent.output_reducers:
        parent.update_outputs(
            apply_output_reducers(parent.output_reducers, [s.outputs for s in succeeded])
        )
    flow._complete_stage(wf, parent, S.SUCCEEDED, now, fx, error=None)


def _open(wf: Workflow, parent: StageExecution) -> bool:
    """True while the fan-out stage waits for its instances (its join is not decided)."""
    return parent.status is S.RUNNING and not wf.status.is_complete
