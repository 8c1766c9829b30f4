"""Execution statuses shared by workflows, stages and tasks."""

from __future__ import annotations

from enum import Enum, StrEnum
from typing import Any, TypeVar

E = TypeVar("E", bound=Enum)
_MEMBERS: dict[type[Enum], dict[Any, Enum]] = {}


def as_member(enum: type[E], value: object) -> E:
    """``enum(value)``, without the enum machinery for a member or a member's value.

    Rebuilding a stage from its row converts about ten values to enums (its status and
    settings, then again in ``__post_init__``, and each task's status); the enum's own
    call costs about 0.7 µs every time. Anything else goes to ``enum(value)``, which
    raises its usual error.
    """
    if type(value) is enum:
        return value
    table = _MEMBERS.get(enum)
    if table is None:
        table = _MEMBERS[enum] = {member.value: member for member in enum}
    try:
        return table[value]  # type: ignore[return-value]
    except (KeyError, TypeError):  # unknown, or unhashable
        return enum(value)


class WorkflowStatus(StrEnum):
    """Status of a workflow, a stage or a task.

    The flags follow the original package: ``is_complete`` means the entity will not run
    again on its own, ``is_halt`` means a failure that stops the workflow, ``is_successful``
    means downstream work may proceed as normal.
    """

    NOT_STARTED = "NOT_STARTED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUSPENDED = "SUSPENDED"
    SUCCEEDED = "SUCCEEDED"
    FAILED_CONTINUE = "FAILED_CONTINUE"
    TERMINAL = "TERMINAL"
    CANCELED = "CANCELED"
    REDIRECT = "REDIRECT"
    STOPPED = "STOPPED"
    SKIPPED = "SKIPPED"
    BUFFERED = "BUFFERED"

    @property
    def is_complete(self) -> bool:
        """True when the entity has finished and will not run again by itself."""
        return self in _COMPLETE

    @property
    def is_halt(self) -> bool:
        """True for failures that stop the workflow (TERMINAL, STOPPED, CANCELED)."""
        return self in _HALT

    @property
    def is_successful(self) -> bool:
        """True for SUCCEEDED and SKIPPED."""
        return self in _SUCCESSFUL

    @property
    def is_failure(self) -> bool:
        """True for TERMINAL, STOPPED and FAILED_CONTINUE (CANCELED is not a failure)."""
        return self in _FAILURE

    @property
    def is_skipped(self) -> bool:
        """True for SKIPPED."""
        return self is WorkflowStatus.SKIPPED

    def __str__(self) -> str:
        return self.value


_COMPLETE = frozenset(
    {
        WorkflowStatus.SUCCEEDED,
        WorkflowStatus.FAILED_CONTINUE,
        WorkflowStatus.TERMINAL,
        WorkflowStatus.CANCELED,
        WorkflowStatus.STOPPED,
        WorkflowStatus.SKIPPED,
    }
)
_HALT = frozenset({WorkflowStatus.TERMINAL, WorkflowStatus.STOPPED, WorkflowStatus.CANCELED})
_SUCCESSFUL = frozenset({WorkflowStatus.SUCCEEDED, WorkflowStatus.SKIPPED})
_FAILURE = frozenset(
    {WorkflowStatus.TERMINAL, WorkflowStatus.STOPPED, WorkflowStatus.FAILED_CONTINUE}
)
