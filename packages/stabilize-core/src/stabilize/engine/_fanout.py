"""Dynamic fan-out inside a transition: one instance stage per item of a list."""

from __future__ import annotations

import stabilize.engine._flow as flow
from stabilize.engine.messages import (
    Effects,
)
from stabilize.models.event import EventType
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
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
        stage.outputs["instances"] = []
        flow._complete_stage(wf, stage, S.SUCCEEDED, now, fx, error=None)
        return
    instances = []
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
        instances.append(instance)
    fx.emit(EventType.STAGE_EXPANDED, "stage", stage.id, instances=len(instances))
    limit = config.max_concurrency or len(instances)
    for instance in instances[:limit]:
        flow._start_stage(wf, instance, now, fx)


def _instances(wf: Workflow, parent: StageExecution) -> list[StageExecution]:
    """The instances of the fan-out stage's current run, in item order."""
    prefix = f"{parent.mi_generation}."
    return [s for s in wf.stages if s.parent_stage_id == parent.id and s.id.startswith(prefix)]


def _instance_done(wf: Workflow, parent: StageExecution, now: int, fx: Effects) -> None:
    """An instance of a fan-out finished: start the next, or complete the fan-out stage."""
    config = parent.mi_config
    if parent.status is not S.RUNNING or config is None or wf.status.is_complete:
        return
    instances = _instances(wf, parent)
    succeeded = [s for s in instances if s.status in (S.SUCCEEDED, S.FAILED_CONTINUE)]
    finished = sum(1 for s in instances if s.status.is_complete)
    need = config.join_threshold or len(instances)
    if len(succeeded) < need and finished < len(instances):
        running = sum(1 for s in instances if s.id in wf.index.active)
        limit = config.max_concurrency or len(instances)
        for instance in instances:
            if running >= limit:
                break
            if instance.status is S.NOT_STARTED:
                flow._start_stage(wf, instance, now, fx)
                running += 1
        return
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
    parent.outputs["instances"] = [s.outputs if s.id in winners else None for s in instances]
    if parent.output_reducers:
        parent.outputs.update(
            apply_output_reducers(parent.output_reducers, [s.outputs for s in succeeded])
        )
    flow._complete_stage(wf, parent, S.SUCCEEDED, now, fx, error=None)
