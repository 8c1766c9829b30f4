"""What the monitor shows, and the :class:`Source` it reads it from.

The app never holds a database handle: it asks a source. :class:`DatabaseSource` answers
from a real database; tests give the app a source of their own with fixed data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stabilize.models.event import Event
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.persistence.overview import QueueStats, WorkflowSummary

WorkflowRow = WorkflowSummary
"""One row of the workflows table (``stabilize.persistence.overview.WorkflowSummary``)."""

S = WorkflowStatus

STATUS_FILTERS: dict[str, tuple[WorkflowStatus, ...] | None] = {
    "all": None,
    "running": (S.NOT_STARTED, S.RUNNING, S.SUSPENDED, S.PAUSED, S.BUFFERED),
    "failed": (S.TERMINAL, S.STOPPED, S.FAILED_CONTINUE, S.CANCELED),
    "recent": None,
}
"""The ``--status`` choices and the workflow statuses each shows (None: every status).

``recent`` shows workflows of any status stored in the last :data:`RECENT_MS`.
"""

RECENT_MS = 24 * 3600 * 1000
"""How far back ``--status recent`` looks, in milliseconds (a day)."""


@dataclass(frozen=True)
class Filters:
    """Which workflows the table lists.

    Attributes:
        application: Only this application's (None: every application).
        status: A key of :data:`STATUS_FILTERS`.
        search: Only workflows whose name contains this text, in any case ("": all).
    """

    application: str | None = None
    status: str = "all"
    search: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUS_FILTERS:
            choices = ", ".join(STATUS_FILTERS)
            raise ValueError(f"unknown status filter {self.status!r} (choose from {choices})")

    def describe(self) -> str:
        """The filters in words, for the screen's title line."""
        parts = [f"app: {self.application or 'all'}", f"status: {self.status}"]
        if self.search:
            parts.append(f"search: {self.search!r}")
        return "  ".join(parts)


class Source(Protocol):
    """Everything the monitor reads and does, behind one object.

    Reads are small, paged queries; actions go through the engine's public API.
    """

    @property
    def location(self) -> str:
        """Where the data comes from, for the title (a path or a URL without secrets)."""
        ...

    def workflows(self, filters: Filters, limit: int, now: float) -> list[WorkflowRow]:
        """The newest ``limit`` workflows that pass ``filters`` (``now``: epoch seconds).

        Args:
            filters: What the user filters by (application, status, search text).
            limit: The most rows.
            now: The current time in epoch seconds (the ``recent`` filter counts back
                from it).

        Returns:
            One row per workflow, newest first.
        """
        ...

    def counts(self, application: str | None) -> dict[str, int]:
        """Workflows per status.

        Args:
            application: Only this application's workflows (None: all).

        Returns:
            The number of workflows by status name.
        """
        ...

    def applications(self) -> list[str]:
        """The applications that have workflows, sorted."""
        ...

    def queue_stats(self, now: float) -> QueueStats:
        """The queue's depth, leases per worker and dead letters.

        Args:
            now: The current time in epoch seconds (what is due counts from it).

        Returns:
            The queue's figures.
        """
        ...

    def marker(self) -> Any:
        """A cheap value that changes when the database commits engine work."""
        ...

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from any thread) when something may have changed.

        Args:
            wake: Called with no argument, possibly from another thread.

        Returns:
            A function that stops watching.
        """
        ...

    def workflow(self, workflow_id: str) -> Workflow:
        """One workflow with its stages, as it is now.

        Args:
            workflow_id: The workflow's id.

        Returns:
            The workflow.
        """
        ...

    def events(self, workflow_id: str, since: int = 0) -> list[Event]:
        """The workflow's recorded events with ``sequence > since``, in order.

        Args:
            workflow_id: The workflow's id.
            since: The last sequence already seen (0: from the start).

        Returns:
            The events, by sequence.
        """
        ...

    def state_at(self, workflow_id: str, sequence: int) -> Workflow:
        """The workflow as it was right after event ``sequence`` (replayed, never re-run).

        Args:
            workflow_id: The workflow's id.
            sequence: The event after which to look.

        Returns:
            The workflow rebuilt from its events.
        """
        ...

    def approve(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        """Approve a waiting approval gate.

        Args:
            workflow_id: The workflow's id.
            stage: The gate's stage id or ``ref_id``.
            user: Who approves.
            note: A note recorded with the decision (empty: none).
        """
        ...

    def reject(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        """Reject a waiting approval gate.

        Args:
            workflow_id: The workflow's id.
            stage: The gate's stage id or ``ref_id``.
            user: Who rejects.
            note: A note recorded with the decision (empty: none).
        """
        ...

    def signal(
        self, workflow_id: str, stage: str, name: str, data: dict[str, Any], user: str
    ) -> None:
        """Send a named signal to a stage.

        Args:
            workflow_id: The workflow's id.
            stage: The stage's id or ``ref_id``.
            name: The signal's name.
            data: JSON values delivered with it.
            user: Who sends it.
        """
        ...

    def cancel(self, workflow_id: str, user: str, reason: str) -> None:
        """Cancel a workflow.

        Args:
            workflow_id: The workflow's id.
            user: Who cancels.
            reason: Why, in words.
        """
        ...

    def cancel_stage(self, workflow_id: str, stage: str, user: str, reason: str) -> None:
        """Cancel one stage of a workflow.

        Args:
            workflow_id: The workflow's id.
            stage: The stage's ``ref_id``.
            user: Who cancels.
            reason: Why, in words.
        """
        ...

    def restart(self, workflow_id: str, stage: str, user: str) -> None:
        """Run a finished stage again, and every stage downstream of it.

        Args:
            workflow_id: The workflow's id.
            stage: The stage's id or ``ref_id``.
            user: Who asks.
        """
        ...

    def pause(self, workflow_id: str) -> None:
        """Pause a running workflow.

        Args:
            workflow_id: The workflow's id.
        """
        ...

    def resume(self, workflow_id: str) -> None:
        """Resume a paused workflow.

        Args:
            workflow_id: The workflow's id.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


__all__ = ["STATUS_FILTERS", "Filters", "QueueStats", "Source", "WorkflowRow"]
