"""The workflow model: a named graph of stages owned by an application."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stabilize.models.graph import GraphIndex, validate_graph
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus, as_member
from stabilize.models.task import new_id
from stabilize.reducers import apply_output_reducers

DEFAULT_MAX_JUMPS = 10
"""How many ``jump_to`` redirects one workflow may take unless ``_max_jumps`` says otherwise."""

_ABSENT: Any = object()


class WorkflowType(StrEnum):
    """Kind of workflow, kept for compatibility with the original package."""

    PIPELINE = "PIPELINE"
    ORCHESTRATION = "ORCHESTRATION"


@dataclass(eq=False)
class Workflow:
    """A workflow execution.

    Build one with :meth:`create`, which checks the stage graph. ``jump_count`` counts the
    ``jump_to`` redirects taken so far, ``error`` explains a TERMINAL end, ``version``
    counts committed transitions and ``event_sequence`` is the number of the last recorded
    event.
    """

    id: str = field(default_factory=new_id)
    type: WorkflowType = WorkflowType.PIPELINE
    application: str = ""
    name: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    stages: list[StageExecution] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    trigger: dict[str, Any] = field(default_factory=dict)
    start_time: int | None = None
    end_time: int | None = None
    is_canceled: bool = False
    canceled_by: str | None = None
    cancellation_reason: str | None = None
    paused: bool = False
    pipeline_config_id: str | None = None
    jump_count: int = 0
    error: str | None = None
    version: int = 0
    event_sequence: int = 0
    _index: GraphIndex | None = field(default=None, repr=False, compare=False)
    # The row as last written or read (JSON), the baseline of the diff that records what
    # the next transition changes (see Transaction.save).
    _written: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for stage in self.stages:
            stage._workflow = self
        _inherit_fan_out_context(self.stages)

    @classmethod
    def create(
        cls,
        application: str,
        name: str,
        stages: Sequence[StageExecution],
        trigger: dict[str, Any] | None = None,
        pipeline_config_id: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> Workflow:
        """Create a workflow from its stages after checking the graph.

        Args:
            application: The owning application (used to list and search workflows).
            name: A human-readable name.
            stages: The stages; ``requisite_stage_ref_ids`` wire them together.
            trigger: What started the workflow (free-form, stored as JSON).
            pipeline_config_id: An optional id of the definition this run came from.
            context: Workflow-level context, visible to every task.

        Returns:
            A NOT_STARTED workflow holding the stages (not stored yet).

        Raises:
            InvalidStageGraphError: duplicate, unknown or self-referencing ``ref_id``.
            CircularDependencyError: the stages depend on each other in a cycle.
        """
        stage_list = list(stages)
        validate_graph(stage_list)
        for stage in stage_list:
            _plan_tasks(stage)
        return cls(
            application=application,
            name=name,
            stages=stage_list,
            trigger=dict(trigger or {}),
            pipeline_config_id=pipeline_config_id,
            context=dict(context or {}),
        )

    @classmethod
    def create_orchestration(
        cls, application: str, name: str, stages: Sequence[StageExecution]
    ) -> Workflow:
        """Create an ORCHESTRATION-type workflow (otherwise the same as :meth:`create`).

        Args:
            application: The owning application.
            name: A human-readable name.
            stages: The stages, wired by ``requisite_stage_ref_ids``.

        Returns:
            A NOT_STARTED workflow (not stored yet).

        Raises:
            InvalidStageGraphError: duplicate, unknown or self-referencing ``ref_id``.
            CircularDependencyError: the stages depend on each other in a cycle.
        """
        workflow = cls.create(application, name, stages)
        workflow.type = WorkflowType.ORCHESTRATION
        return workflow

    @property
    def index(self) -> GraphIndex:
        """The cached graph index (rebuilt after :meth:`invalidate_index`)."""
        if self._index is None:
            self._index = GraphIndex(self.stages)
        return self._index

    def invalidate_index(self) -> None:
        """Drop the cached graph index after the stage list or requisites change."""
        self._index = None

    def stage_by_id(self, stage_id: str) -> StageExecution:
        """Return the stage with this id.

        Args:
            stage_id: The stage's id (not its ``ref_id``).

        Returns:
            The stage.

        Raises:
            KeyError: The workflow has no stage with this id, naming both.
        """
        try:
            return self.index.by_id[stage_id]
        except KeyError:
            raise KeyError(f"workflow {self.id} has no stage with id {stage_id!r}") from None

    def stage_by_ref_id(self, ref_id: str) -> StageExecution:
        """Return the stage with this ``ref_id``.

        Args:
            ref_id: The stage's ``ref_id``.

        Returns:
            The stage.

        Raises:
            KeyError: The workflow has no stage with this ``ref_id``, naming both.
        """
        try:
            return self.index.by_ref[ref_id]
        except KeyError:
            raise KeyError(f"workflow {self.id} has no stage {ref_id!r}") from None

    def initial_stages(self) -> list[StageExecution]:
        """The stages with no requisites, in declaration order."""
        return [s for s in self.stages if not s.requisite_stage_ref_ids]

    def top_level_stages(self) -> list[StageExecution]:
        """The stages without a parent stage."""
        return [s for s in self.stages if s.parent_stage_id is None]

    def task_context(self, stage: StageExecution) -> dict[str, Any]:
        """The context a task of ``stage`` sees.

        The workflow context, then the outputs of every ancestor in topological order
        (nearer ancestors override farther ones; ties keep declaration order), then the
        keys the stage's ``output_reducers`` combine from its requisites, then the stage's
        own context on top: the stage's own keys always win. An instance of a dynamic
        fan-out (``mi_config``) sees its item under ``item_key`` but not the list of all
        items at ``items_key``.

        Args:
            stage: A stage of this workflow.

        The ancestors' merge is cached per stage and reused down a chain (see
        :meth:`GraphIndex.upstream_outputs`): the engine's changes of outputs
        (:meth:`StageExecution.update_outputs`, :meth:`StageExecution.reset`) are seen;
        after assigning to a stage's ``outputs`` by hand, call :meth:`invalidate_index`.

        Returns:
            A new dict (changing it changes nothing stored).
        """
        merged: dict[str, Any] = dict(self.context)
        merged.update(self.index.upstream_outputs(stage.ref_id))
        if stage.output_reducers:
            branches = [s.outputs for s in self.joined_upstream(stage)]
            merged.update(apply_output_reducers(stage.output_reducers, branches))
        merged.update(stage.context)
        if stage.mi_index is not None and stage.parent_stage_id is not None:
            # An instance of a dynamic fan-out sees its item, not the list of all items:
            # copying the list into each instance's task would cost O(n) per instance.
            fan_out = self.index.by_id.get(stage.parent_stage_id)
            config = fan_out.mi_config if fan_out is not None else None
            if fan_out is not None and config is not None and config.items_key != config.item_key:
                key = config.items_key
                own = stage.context.get(key, _ABSENT)
                shared = fan_out.context.get(key, _ABSENT)
                # (A list an instance's task set is its own and stays; rows written before
                # issue 19 hold an equal copy of the fan-out's, which `==` finds.)
                if own is _ABSENT or own is shared or own == shared:
                    merged.pop(key, None)
        return merged

    def joined_upstream(self, stage: StageExecution) -> list[StageExecution]:
        """The requisites of ``stage`` that finished and activated it, in declaration order.

        Args:
            stage: A stage of this workflow.

        Returns:
            Its SUCCEEDED or FAILED_CONTINUE requisites whose branch leads to it.
        """
        ups = {s.ref_id for s in self.index.upstream[stage.ref_id]}
        return [
            s
            for s in self.stages
            if s.ref_id in ups
            and s.status in (WorkflowStatus.SUCCEEDED, WorkflowStatus.FAILED_CONTINUE)
            and stage.ref_id not in s.branches_not_taken
        ]

    def get_context(self) -> dict[str, Any]:
        """The outputs of every stage merged in topological order (later stages win)."""
        merged: dict[str, Any] = {}
        position = self.index.topo_position
        for stage in sorted(self.stages, key=lambda s: position[s.ref_id]):
            merged.update(stage.outputs)
        return merged

    def max_jumps(self) -> int:
        """The bound on ``jump_to`` redirects of the whole workflow.

        ``context["_max_jumps"]`` (default 10), plus the ``max_iterations`` that structured
        loops (:mod:`stabilize.loops`) declare on their check stages (``stage.loop``).
        """
        value = int(self.context.get("_max_jumps", DEFAULT_MAX_JUMPS))
        return value + sum(s.loop.max_iterations for s in self.stages if s.loop is not None)

    def failure_summary(self) -> str | None:
        """Why the workflow failed, in a few lines; ``None`` unless it ended in failure.

        Names each failed stage with the messages of its failed tasks (from their
        ``task_exception_details``), and the workflow's ``error`` when no task says it.
        """
        if not (self.status.is_complete and self.status.is_failure):
            return None
        lines = [f"workflow {self.name!r} ({self.id}) ended {self.status.value}"]
        told: list[str] = []
        for stage in self.stages:
            if not stage.status.is_failure:
                continue
            lines.append(f"  stage {stage.ref_id!r} ended {stage.status.value}")
            for task in stage.tasks:
                message = str(task.task_exception_details.get("message") or "")
                if task.status.is_failure and message:
                    lines.append(f"    task {task.name!r}: {message}")
                    told.append(message)
        if self.error and not any(self.error in m or m in self.error for m in told):
            lines.insert(1, f"  {self.error}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the workflow without its stages."""
        return {
            "id": self.id,
            "type": self.type.value,
            "application": self.application,
            "name": self.name,
            "status": self.status.value,
            "context": self.context,
            "trigger": self.trigger,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "is_canceled": self.is_canceled,
            "canceled_by": self.canceled_by,
            "cancellation_reason": self.cancellation_reason,
            "paused": self.paused,
            "pipeline_config_id": self.pipeline_config_id,
            "jump_count": self.jump_count,
            "error": self.error,
        }

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        stages: Iterable[StageExecution],
        version: int,
        event_sequence: int = 0,
    ) -> Workflow:
        """Rebuild a workflow from :meth:`to_dict` output and its stages.

        Args:
            data: What :meth:`to_dict` returned.
            stages: The workflow's stages.
            version: The stored row's version.
            event_sequence: The last event sequence recorded for the workflow.

        Returns:
            The workflow, its stages linked back to it.

        Raises:
            KeyError: ``data`` lacks ``id``, ``application``, ``name`` or ``status``.
            ValueError: ``data`` names an unknown status or type.
        """
        return cls(
            id=data["id"],
            type=WorkflowType(data.get("type", "PIPELINE")),
            application=data["application"],
            name=data["name"],
            status=as_member(WorkflowStatus, data["status"]),
            stages=list(stages),
            context=data.get("context") or {},
            trigger=data.get("trigger") or {},
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            is_canceled=data.get("is_canceled", False),
            canceled_by=data.get("canceled_by"),
            cancellation_reason=data.get("cancellation_reason"),
            paused=data.get("paused", False),
            pipeline_config_id=data.get("pipeline_config_id"),
            jump_count=data.get("jump_count", 0),
            error=data.get("error"),
            version=version,
            event_sequence=event_sequence,
        )


def _plan_tasks(stage: StageExecution) -> None:
    """Force the first and last task flags, as the original planner did."""
    for i, task in enumerate(stage.tasks):
        task.stage_start = i == 0
        task.stage_end = i == len(stage.tasks) - 1


def _inherit_fan_out_context(stages: Sequence[StageExecution]) -> None:
    """Layer each fan-out instance's context over its fan-out stage's.

    An instance's stored row holds only its own keys (see
    :meth:`StageExecution.to_row`); its context is the fan-out stage's with those on top,
    as when it was created. Rows written before issue 19 hold a copy of every key: their
    own values win, so they read as they did.
    """
    instances = [s for s in stages if s.mi_index is not None and s.parent_stage_id is not None]
    if not instances:
        return
    by_id = {s.id: s for s in stages}
    for instance in instances:
        parent = by_id.get(instance.parent_stage_id or "")
        if parent is not None and parent.mi_config is not None:
            instance.context = {**parent.context, **instance.context}
