"""Read-only overviews of a database for dashboards (``stabilize monitor``).

Each function answers one screen's question with a few queries on indexed columns, and
never loads whole workflows: a page of workflow summaries is three queries (the page's ids
through the indexes, their ``workflows`` rows, the status of their stages), however many
workflows are stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from stabilize.models.status import WorkflowStatus
from stabilize.persistence.store import WorkflowStore, workflow_filters
from stabilize.queue.queue import Queue


@dataclass(frozen=True)
class WorkflowSummary:
    """One workflow as a dashboard row.

    Attributes:
        id: The workflow id.
        application: Its application.
        name: Its name.
        status: Its status (a :class:`~stabilize.models.status.WorkflowStatus` value).
        created_at: When it was stored, epoch milliseconds.
        updated_at: When its row last changed, epoch milliseconds.
        start_time: When it started, epoch milliseconds (None: not yet).
        end_time: When it ended, epoch milliseconds (None: not yet).
        stages_done: Stages in a final status.
        stages_total: All its stages.
        current_stages: ``ref_id`` of the stages running, suspended or paused now.
    """

    id: str
    application: str
    name: str
    status: str
    created_at: int
    updated_at: int
    start_time: int | None = None
    end_time: int | None = None
    stages_done: int = 0
    stages_total: int = 0
    current_stages: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueueStats:
    """The state of a queue at one moment.

    Attributes:
        ready: Messages due now and not leased.
        delayed: Messages due later and not leased.
        leased: Messages a worker holds an unexpired lease on.
        leases_by_owner: Unexpired leases per worker (its owner id).
        dead_letters: Messages moved aside after too many deliveries.
    """

    ready: int = 0
    delayed: int = 0
    leased: int = 0
    leases_by_owner: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0

    @property
    def depth(self) -> int:
        """Every message in the queue."""
        return self.ready + self.delayed + self.leased


_ACTIVE = frozenset({WorkflowStatus.RUNNING, WorkflowStatus.SUSPENDED, WorkflowStatus.PAUSED})


def summarize_workflows(
    store: WorkflowStore,
    *,
    application: str | None = None,
    status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None = None,
    name: str | None = None,
    created_since: int | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[WorkflowSummary]:
    """A page of workflows, newest first, with the progress of their stages.

    Takes the filters of :meth:`WorkflowStore.list_workflows`; the page is read through the
    ``(application, status, created_at)`` and ``(status, created_at)`` indexes.

    Args:
        store: The workflow store.
        application: Only this application's workflows.
        status: One status or several.
        name: Only workflows whose name contains this text (in any case).
        created_since: Only workflows stored at or after this time (epoch milliseconds).
        limit: At most this many.
        offset: Skip this many first.

    Raises:
        ValueError: ``limit`` or ``offset`` is negative, or a status is unknown.
    """
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must not be negative, got {limit} and {offset}")
    backend = store.backend
    p = backend.placeholder
    ids = _page_ids(p, application, status, name, created_since, limit, offset)
    with backend.read() as tx:
        tx.cur.execute(*ids)
        page = [row[0] for row in tx.cur.fetchall()]
        if not page:
            return []
        marks = ", ".join(p for _ in page)
        tx.cur.execute(
            "SELECT id, application, name, status, created_at, updated_at, body FROM workflows "
            f"WHERE id IN ({marks})",
            tuple(page),
        )
        by_id = {row[0]: row for row in tx.cur.fetchall()}
        stages: dict[str, list[tuple[str, str]]] = {workflow_id: [] for workflow_id in page}
        tx.cur.execute(
            "SELECT workflow_id, ref_id, status FROM stages "
            f"WHERE workflow_id IN ({marks}) ORDER BY workflow_id, position",
            tuple(page),
        )
        for workflow_id, ref_id, stage_status in tx.cur.fetchall():
            stages[workflow_id].append((ref_id, stage_status))
    rows = [by_id[workflow_id] for workflow_id in page if workflow_id in by_id]
    return [_summary(row, stages[row[0]]) for row in rows]


def count_by_status(store: WorkflowStore, application: str | None = None) -> dict[str, int]:
    """How many workflows have each status (statuses with none are left out).

    Args:
        store: The workflow store.
        application: Only this application's workflows.
    """
    backend = store.backend
    where, params = workflow_filters(backend.placeholder, application, None, None, None)
    with backend.read() as tx:
        tx.cur.execute(f"SELECT status, count(*) FROM workflows{where} GROUP BY status", params)
        return {str(status): int(n) for status, n in tx.cur.fetchall()}


def count_finished_stages(store: WorkflowStore) -> int:
    """How many stages of all workflows are in a final status (for a throughput chart).

    This reads the ``status`` column of every stage row (no index covers it): sample it
    every few seconds, not on every commit.
    """
    finals = [s.value for s in WorkflowStatus if s.is_complete]
    backend = store.backend
    marks = ", ".join(backend.placeholder for _ in finals)
    with backend.read() as tx:
        tx.cur.execute(f"SELECT count(*) FROM stages WHERE status IN ({marks})", tuple(finals))
        return int(tx.cur.fetchone()[0])


def applications(store: WorkflowStore) -> list[str]:
    """The applications that have workflows, sorted."""
    with store.backend.read() as tx:
        tx.cur.execute("SELECT DISTINCT application FROM workflows ORDER BY application")
        return [str(row[0]) for row in tx.cur.fetchall()]


def queue_stats(queue: Queue, now: int) -> QueueStats:
    """Ready, delayed and leased messages, leases per worker and dead letters.

    Args:
        queue: The queue.
        now: The current time, epoch milliseconds (a lease ending before it has expired).
    """
    backend = queue.backend
    p = backend.placeholder
    with backend.read() as tx:
        tx.cur.execute(
            "SELECT lease_owner, count(*) FROM queue_messages "
            f"WHERE lease_owner IS NOT NULL AND lease_until >= {p} GROUP BY lease_owner",
            (now,),
        )
        owners = {str(owner): int(n) for owner, n in tx.cur.fetchall()}
        tx.cur.execute(
            "SELECT count(*) FROM queue_messages "
            f"WHERE deliver_at <= {p} AND (lease_until IS NULL OR lease_until < {p})",
            (now, now),
        )
        ready = int(tx.cur.fetchone()[0])
        tx.cur.execute(
            "SELECT count(*) FROM queue_messages "
            f"WHERE deliver_at > {p} AND (lease_until IS NULL OR lease_until < {p})",
            (now, now),
        )
        delayed = int(tx.cur.fetchone()[0])
        tx.cur.execute("SELECT count(*) FROM dead_letters")
        dead = int(tx.cur.fetchone()[0])
    return QueueStats(ready, delayed, sum(owners.values()), owners, dead)


def change_marker(store: WorkflowStore) -> tuple[Any, ...]:
    """A value that changes whenever the database commits engine work.

    Cheap enough to poll: the newest row of the event log (the dialect's ``events_head``
    query: SQLite's largest rowid; PostgreSQL's newest timestamp and the rows at it,
    through ``events_by_time``) and the queue's size. With event recording off, only the
    queue's size and its earliest delivery time change.
    """
    with store.backend.read() as tx:
        tx.cur.execute("SELECT count(*), min(deliver_at), max(id) FROM queue_messages")
        queue_row = tuple(tx.cur.fetchone())
        tx.cur.execute(tx.q["events_table_exists"])
        if tx.cur.fetchone() is None:
            return queue_row
        tx.cur.execute(tx.q["events_head"])
        head = tx.cur.fetchone()
        return (*queue_row, *(tuple(head) if head is not None else ()))


def _page_ids(
    p: str,
    application: str | None,
    status: WorkflowStatus | str | Iterable[WorkflowStatus | str] | None,
    name: str | None,
    created_since: int | None,
    limit: int,
    offset: int,
) -> tuple[str, tuple[Any, ...]]:
    """The query of a page of ids, newest first, one index range per status.

    No index starts with ``created_at``: ordering every workflow by it scans and sorts the
    whole table. ``(status, created_at)`` and ``(application, status, created_at)`` give
    each status's newest workflows in order, so the page is the newest of the first
    ``offset + limit`` of each status (a union of index range scans).
    """
    if status is None:
        statuses = [s.value for s in WorkflowStatus]
    else:
        chosen = [status] if isinstance(status, str | WorkflowStatus) else list(status)
        statuses = [WorkflowStatus(s).value for s in chosen]
    parts: list[str] = []
    params: list[Any] = []
    for n, value in enumerate(statuses):
        where, part_params = workflow_filters(p, application, value, name, created_since)
        parts.append(
            f"SELECT id, created_at FROM (SELECT id, created_at FROM workflows{where} "
            f"ORDER BY created_at DESC, id DESC LIMIT {p}) AS s{n}"
        )
        params.extend((*part_params, offset + limit))
    sql = " UNION ALL ".join(parts) + f" ORDER BY 2 DESC, 1 DESC LIMIT {p} OFFSET {p}"
    return sql, (*params, limit, offset)


def _summary(row: tuple[Any, ...], stages: list[tuple[str, str]]) -> WorkflowSummary:
    workflow_id, application, name, status, created_at, updated_at, body = row
    document = json.loads(body) if isinstance(body, str | bytes) else dict(body or {})
    done = sum(1 for _, s in stages if WorkflowStatus(s).is_complete)
    current = tuple(ref for ref, s in stages if WorkflowStatus(s) in _ACTIVE)
    return WorkflowSummary(
        id=str(workflow_id),
        application=str(application),
        name=str(name),
        status=str(status),
        created_at=int(created_at),
        updated_at=int(updated_at),
        start_time=document.get("start_time"),
        end_time=document.get("end_time"),
        stages_done=done,
        stages_total=len(stages),
        current_stages=current,
    )
