"""The stage model: a node of the workflow graph that runs one or more tasks."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution, new_id

if TYPE_CHECKING:
    from stabilize.models.workflow import Workflow


@dataclass(eq=False)
class StageExecution:
    """A stage of a workflow.

    ``context`` holds the stage's own configuration and whatever its tasks add to it;
    ``outputs`` holds what its tasks publish. A task sees the outputs of every ancestor
    merged under the stage's own context (see :meth:`Workflow.task_context`).
    """

    id: str = field(default_factory=new_id)
    ref_id: str = ""
    type: str = ""
    name: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    context: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)
    tasks: list[TaskExecution] = field(default_factory=list)
    requisite_stage_ref_ids: set[str] = field(default_factory=set)
    parent_stage_id: str | None = None
    start_time: int | None = None
    end_time: int | None = None
    version: int = 0
    _workflow: Workflow | None = field(default=None, repr=False, compare=False)
    _progress: list[dict[str, Any]] | None = field(default=None, repr=False, compare=False)
    _attempt_key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Accept any iterable (lists are common in user code) but keep a set, as the spec shows.
        requisites: Any = self.requisite_stage_ref_ids
        if not isinstance(requisites, set):
            self.requisite_stage_ref_ids = set(_as_iterable(requisites))

    @property
    def execution(self) -> Workflow:
        """The workflow this stage belongs to."""
        if self._workflow is None:
            raise RuntimeError(f"stage {self.ref_id!r} is not attached to a workflow")
        return self._workflow

    @property
    def workflow_id(self) -> str | None:
        """The id of the workflow this stage belongs to, if attached."""
        return self._workflow.id if self._workflow is not None else None

    @property
    def idempotency_key(self) -> str:
        """A key for the task execution that received this stage, stable across re-runs.

        It names the workflow, stage, task and transient-retry attempt, so an execution
        interrupted by a crash runs again with the same key: pass it to external services
        to make their side effects happen once.
        """
        if self._attempt_key is None:
            raise RuntimeError("idempotency_key exists only on the stage a task receives")
        return self._attempt_key

    def upstream_stages(self) -> list[StageExecution]:
        """The stages this stage directly depends on, in declaration order."""
        wf = self.execution
        return [s for s in wf.stages if s.ref_id in self.requisite_stage_ref_ids]

    def downstream_stages(self) -> list[StageExecution]:
        """The stages that directly depend on this stage, in declaration order."""
        return [s for s in self.execution.stages if self.ref_id in s.requisite_stage_ref_ids]

    def task_by_id(self, task_id: str) -> TaskExecution:
        """Return the task with this id; raise ``KeyError`` when there is none."""
        for task in self.tasks:
            if task.id == task_id:
                return task
        raise KeyError(f"stage {self.ref_id!r} has no task {task_id!r}")

    def reset(self) -> None:
        """Return the stage and its tasks to NOT_STARTED (used by jumps and restarts)."""
        self.status = WorkflowStatus.NOT_STARTED
        self.start_time = None
        self.end_time = None
        self.outputs = {}
        for task in self.tasks:
            task.reset()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the stage (tasks included)."""
        return {
            "id": self.id,
            "ref_id": self.ref_id,
            "type": self.type,
            "name": self.name,
            "status": self.status.value,
            "context": self.context,
            "outputs": self.outputs,
            "tasks": [t.to_dict() for t in self.tasks],
            "requisite_stage_ref_ids": sorted(self.requisite_stage_ref_ids),
            "parent_stage_id": self.parent_stage_id,
            "start_time": self.start_time,
            "end_time": self.end_time,
            "version": self.version,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageExecution:
        """Rebuild a stage from :meth:`to_dict` output."""
        return cls(
            id=data["id"],
            ref_id=data["ref_id"],
            type=data.get("type", ""),
            name=data.get("name", ""),
            status=WorkflowStatus(data["status"]),
            context=data.get("context") or {},
            outputs=data.get("outputs") or {},
            tasks=[TaskExecution.from_dict(t) for t in data.get("tasks") or []],
            requisite_stage_ref_ids=set(data.get("requisite_stage_ref_ids") or []),
            parent_stage_id=data.get("parent_stage_id"),
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            version=data.get("version", 0),
        )


def _as_iterable(value: Iterable[str] | str | None) -> Iterable[str]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return value
