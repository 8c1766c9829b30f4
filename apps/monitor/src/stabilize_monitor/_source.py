"""The monitor's source on a real database, through stabilize's public API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stabilize.connect import check_database_url, open_database
from stabilize.events import EventReplayer, EventStore
from stabilize.models.event import Event
from stabilize.models.workflow import Workflow
from stabilize.orchestrator import Orchestrator
from stabilize.persistence import overview
from stabilize.persistence.overview import QueueStats
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.queue import Queue
from stabilize_monitor._model import RECENT_MS, STATUS_FILTERS, Filters, WorkflowRow
from stabilize_monitor._watch import ChangeWatcher


class DatabaseSource:
    """Reads a stabilize database for the monitor and acts through the engine's API.

    Args:
        store: The workflow store.
        queue: The queue of the same database.
        event_store: The event log (default: the one in the same database).
        watch_interval: Seconds between two checks for commits when nothing else wakes
            the monitor (SQLite's ``data_version``; a missed ``NOTIFY`` on PostgreSQL).
    """

    def __init__(
        self,
        store: WorkflowStore,
        queue: Queue,
        event_store: EventStore | None = None,
        *,
        watch_interval: float = 0.25,
    ) -> None:
        self.store = store
        self.queue = queue
        self.event_store = (
            event_store if event_store is not None else store.backend.own_event_store()
        )
        self.orchestrator = Orchestrator(queue, store)
        self.replayer = EventReplayer(self.event_store)
        self.watch_interval = watch_interval

    @classmethod
    def open(cls, url: str, schema: str | None = None) -> DatabaseSource:
        """The source on the database ``url`` names (``sqlite:///...`` or ``postgresql://...``).

        A monitor only opens: it never creates a SQLite file or a PostgreSQL schema.

        Args:
            url: ``sqlite:///path.db`` or ``postgresql://...``.
            schema: The PostgreSQL schema holding the tables (None: the default).

        Returns:
            A source reading that database.

        Raises:
            DatabaseUrlError: ``url`` is not a ``sqlite:///`` or ``postgresql://`` URL.
            DatabaseNotFoundError: there is no stabilize database there.
            SchemaVersionError: the database's schema is older or newer than this stabilize.
            ValueError: a schema was given for SQLite.
            ImportError: psycopg is missing for a PostgreSQL URL.
        """
        check_database_url(url)
        store, queue = open_database(url, schema, create=False)
        return cls(store, queue)

    @property
    def location(self) -> str:
        """The database's file path or URL (without a password)."""
        return self.store.backend.location

    def workflows(self, filters: Filters, limit: int, now: float) -> list[WorkflowRow]:
        """The newest ``limit`` workflows that pass ``filters``.

        Args:
            filters: What the user filters by (application, status, search text).
            limit: The most rows.
            now: The current time in epoch seconds (the ``recent`` filter counts back
                from it).

        Returns:
            One row per workflow, newest first.
        """
        since = int(now * 1000) - RECENT_MS if filters.status == "recent" else None
        return overview.summarize_workflows(
            self.store,
            application=filters.application,
            status=STATUS_FILTERS[filters.status],
            name=filters.search or None,
            created_since=since,
            limit=limit,
        )

    def counts(self, application: str | None) -> dict[str, int]:
        """Workflows per status.

        Args:
            application: Only this application's workflows (None: all).

        Returns:
            The number of workflows by status name.
        """
        return overview.count_by_status(self.store, application)

    def applications(self) -> list[str]:
        """The applications that have workflows, sorted."""
        return overview.applications(self.store)

    def queue_stats(self, now: float) -> QueueStats:
        """The queue's depth, leases per worker and dead letters.

        Args:
            now: The current time in epoch seconds (what is due counts from it).

        Returns:
            The queue's figures.
        """
        return overview.queue_stats(self.queue, int(now * 1000))

    def finished_stages(self) -> int:
        """Stages in a final status, over all workflows (sampled for the rate chart)."""
        return overview.count_finished_stages(self.store)

    def marker(self) -> Any:
        """A cheap value that changes when the database commits engine work."""
        return overview.change_marker(self.store)

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` when the database may have changed; returns the stop function.

        Args:
            wake: Called with no argument, from the watcher's thread.

        Returns:
            A function that stops watching.
        """
        watcher = ChangeWatcher(self.event_store, self.marker, wake, self.watch_interval)
        watcher.start()
        return watcher.close

    def workflow(self, workflow_id: str) -> Workflow:
        """One workflow with its stages, as it is now.

        Args:
            workflow_id: The workflow's id.

        Returns:
            The workflow.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        return self.store.retrieve(workflow_id)

    def events(self, workflow_id: str, since: int = 0) -> list[Event]:
        """The workflow's recorded events after ``since``.

        Args:
            workflow_id: The workflow's id.
            since: The last sequence already seen (0: from the start).

        Returns:
            The events with a greater sequence, in order.
        """
        return self.event_store.get_events(workflow_id, since)

    def state_at(self, workflow_id: str, sequence: int) -> Workflow:
        """The workflow right after event ``sequence``, rebuilt from the log.

        Args:
            workflow_id: The workflow's id.
            sequence: The event after which to look.

        Returns:
            The workflow rebuilt from its events (no task runs).
        """
        return self.replayer.rebuild_workflow_state(workflow_id, sequence)

    def approve(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        """Approve a waiting gate (needs stabilize-hitl).

        Args:
            workflow_id: The workflow's id.
            stage: The gate's stage id or ``ref_id``.
            user: Who approves.
            note: A note recorded with the decision (empty: none).

        Raises:
            ImportError: stabilize-hitl is not installed (the message says so).
            SignalError: No such gate, or it takes no decision now.
            WorkflowNotFoundError: No workflow has this id.
        """
        _hitl().approve(self.queue, workflow_id, stage, user=user, note=note or None)

    def reject(self, workflow_id: str, stage: str, user: str, note: str) -> None:
        """Reject a waiting gate (needs stabilize-hitl).

        Args:
            workflow_id: The workflow's id.
            stage: The gate's stage id or ``ref_id``.
            user: Who rejects.
            note: A note recorded with the decision (empty: none).

        Raises:
            ImportError: stabilize-hitl is not installed (the message says so).
            SignalError: No such gate, or it takes no decision now.
            WorkflowNotFoundError: No workflow has this id.
        """
        _hitl().reject(self.queue, workflow_id, stage, user=user, note=note or None)

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

        Raises:
            SignalError: No such stage, or it has finished.
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.signal(workflow_id, stage, name, data, user=user)

    def cancel(self, workflow_id: str, user: str, reason: str) -> None:
        """Cancel a workflow.

        Args:
            workflow_id: The workflow's id.
            user: Who cancels.
            reason: Why, in words.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.cancel(workflow_id, user=user, reason=reason)

    def cancel_stage(self, workflow_id: str, stage: str, user: str, reason: str) -> None:
        """Cancel one stage of a workflow.

        Args:
            workflow_id: The workflow's id.
            stage: The stage's ``ref_id``.
            user: Who cancels.
            reason: Why, in words.

        Raises:
            KeyError: The workflow has no such stage.
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.cancel_stage(workflow_id, stage, user=user, reason=reason)

    def restart(self, workflow_id: str, stage: str, user: str) -> None:
        """Run a finished stage again, and every stage downstream of it.

        Args:
            workflow_id: The workflow's id.
            stage: The stage's id or ``ref_id``.
            user: Who asks.

        Raises:
            RestartError: The stage cannot run again now (see
                :meth:`~stabilize.Orchestrator.restart`).
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.restart(workflow_id, stage, user=user)

    def pause(self, workflow_id: str) -> None:
        """Pause a running workflow.

        Args:
            workflow_id: The workflow's id.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.pause(workflow_id)

    def resume(self, workflow_id: str) -> None:
        """Resume a paused workflow.

        Args:
            workflow_id: The workflow's id.

        Raises:
            WorkflowNotFoundError: No workflow has this id.
        """
        self.orchestrator.resume(workflow_id)

    def close(self) -> None:
        """Nothing to release: the store's connections are shared in the process."""


def _hitl() -> Any:
    try:
        import stabilize.hitl as hitl
    except ImportError:
        raise ImportError(
            "approving or rejecting a gate needs stabilize-hitl: pip install stabilize-hitl"
        ) from None
    return hitl
