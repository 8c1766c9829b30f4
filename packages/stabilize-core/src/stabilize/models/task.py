"""The task execution model: one unit of user code inside a stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

from stabilize.models.status import WorkflowStatus, as_member

KEPT_STATE_KEY = "kept"
"""The entry of a task's ``state`` that a reset keeps (see :attr:`TaskExecution.state`)."""


def new_id() -> str:
    """Return a new ULID string (sortable by creation time)."""
    return str(ULID())


@dataclass(eq=False)
class TaskExecution:
    """A task of a stage: the ``implementing_class`` names a task in the ``TaskRegistry``.

    Attributes are persisted as they are; ``retry_count`` counts transient-error retries of
    the current attempt and ``task_exception_details`` holds the last error, if any.
    """

    id: str = field(default_factory=new_id)
    name: str = ""
    implementing_class: str = ""
    status: WorkflowStatus = WorkflowStatus.NOT_STARTED
    start_time: int | None = None
    end_time: int | None = None
    stage_start: bool = False
    stage_end: bool = False
    loop_start: bool = False
    loop_end: bool = False
    task_exception_details: dict[str, Any] = field(default_factory=dict)
    retry_count: int = 0
    version: int = 0
    state: dict[str, Any] = field(default_factory=dict)
    """The task's own durable state between its executions (JSON values).

    The running task reads it as ``stage.task_state`` and replaces it by returning it:
    ``TaskResult.running(state=...)`` (also ``success``, ``suspend``, or a
    ``TransientError(state=...)``); a result without ``state`` leaves it as it is. It is
    committed with the result, so a task run again after a crash finds the state its last
    committed execution left (a wait's deadline, an agent's checkpoint). A reset (a jump
    back, a restart) empties it for the next run, except its ``"kept"`` entry: what the
    task carries from one run to the next (the agent's step count, so that tool calls of
    a new run get idempotency keys of their own).
    """

    @classmethod
    def create(
        cls,
        name: str,
        implementing_class: str,
        stage_start: bool = False,
        stage_end: bool = False,
    ) -> TaskExecution:
        """Create a task that runs the registered task ``implementing_class``.

        Args:
            name: A name for the task, unique within its stage by convention.
            implementing_class: The name the task is registered under in a ``TaskRegistry``.
            stage_start: Whether this is the stage's first task (planning sets it anyway).
            stage_end: Whether this is the stage's last task (planning sets it anyway).
        """
        return cls(
            name=name,
            implementing_class=implementing_class,
            stage_start=stage_start,
            stage_end=stage_end,
        )

    def reset(self) -> None:
        """Return the task to NOT_STARTED, forgetting its run (used by jumps and restarts).

        Its ``state`` keeps only the ``"kept"`` entry.
        """
        self.status = WorkflowStatus.NOT_STARTED
        self.start_time = None
        self.end_time = None
        self.task_exception_details = {}
        self.retry_count = 0
        kept = self.state.get(KEPT_STATE_KEY)
        self.state = {} if kept is None else {KEPT_STATE_KEY: kept}

    def _head(self) -> dict[str, Any]:
        """The fields every form of the task carries (:meth:`to_dict`, :meth:`to_row`)."""
        return {
            "id": self.id,
            "name": self.name,
            "implementing_class": self.implementing_class,
            "status": self.status.value,
            "start_time": self.start_time,
            "end_time": self.end_time,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of the task."""
        return {
            **self._head(),
            "stage_start": self.stage_start,
            "stage_end": self.stage_end,
            "loop_start": self.loop_start,
            "loop_end": self.loop_end,
            "task_exception_details": self.task_exception_details,
            "retry_count": self.retry_count,
            "version": self.version,
            "state": self.state,
        }

    def to_row(self) -> dict[str, Any]:
        """The task as stored: :meth:`to_dict` without the fields at their defaults.

        :meth:`from_dict` reads either form; the stored rows (and the event log's diffs of
        them) stay about half the size.
        """
        row = self._head()
        if self.stage_start:
            row["stage_start"] = True
        if self.stage_end:
            row["stage_end"] = True
        if self.loop_start:
            row["loop_start"] = True
        if self.loop_end:
            row["loop_end"] = True
        if self.task_exception_details:
            row["task_exception_details"] = self.task_exception_details
        if self.retry_count:
            row["retry_count"] = self.retry_count
        if self.version:
            row["version"] = self.version
        if self.state:
            row["state"] = self.state
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskExecution:
        """Rebuild a task from :meth:`to_dict` output.

        Args:
            data: What :meth:`to_dict` (or :meth:`to_row`) returned.

        Returns:
            The task.

        Raises:
            KeyError: ``data`` lacks ``id``, ``name``, ``implementing_class`` or ``status``.
            ValueError: ``data`` names an unknown status.
        """
        return cls(
            id=data["id"],
            name=data["name"],
            implementing_class=data["implementing_class"],
            status=as_member(WorkflowStatus, data["status"]),
            start_time=data.get("start_time"),
            end_time=data.get("end_time"),
            stage_start=data.get("stage_start", False),
            stage_end=data.get("stage_end", False),
            loop_start=data.get("loop_start", False),
            loop_end=data.get("loop_end", False),
            task_exception_details=data.get("task_exception_details") or {},
            retry_count=data.get("retry_count", 0),
            version=data.get("version", 0),
            state=data.get("state") or {},
        )
