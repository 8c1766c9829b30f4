"""The backend interface: one database holding workflows, stages, the queue and events.

Everything above this layer (store, queue, processor, orchestrator) is dialect-free. A
dialect module supplies a DB-API connection and its named queries; the transaction logic
here is shared, so SQLite and PostgreSQL cannot drift apart.
"""

from __future__ import annotations

import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Literal, Protocol

from stabilize._json import ENCODING_ERRORS, dumps, dumps_known, loads
from stabilize.errors import ContextSerializationError
from stabilize.events.diff import diff
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow
from stabilize.records import USER_DATA_EVENTS, ClaimedMessage, Effects, EventDraft, Message

if TYPE_CHECKING:
    from stabilize.events.recorder import EventStore
    from stabilize.tasks.registry import TaskRegistry


class Cursor(Protocol):
    """The part of a DB-API cursor the backend uses."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Any:
        """Run one statement."""

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement for each parameter row."""

    def fetchone(self) -> Any:
        """Return the next row or None."""

    def fetchall(self) -> list[Any]:
        """Return the remaining rows."""

    @property
    def rowcount(self) -> int:
        """Rows changed by the last statement."""


def check_json(value: Any, where: str, *, ref_id: str | None = None) -> None:
    """Raise :class:`ContextSerializationError` naming ``where`` if ``value`` is not JSON."""
    try:
        dumps(value)
    except ENCODING_ERRORS as exc:
        culprit = ""
        if isinstance(value, dict):
            for key, item in value.items():
                try:
                    dumps(item)
                except ENCODING_ERRORS:
                    culprit = f" (key {key!r} holds a {type(item).__name__})"
                    break
        raise ContextSerializationError(
            f"{where} cannot be stored as JSON{culprit}: {exc}", ref_id=ref_id
        ) from None


def check_workflow_json(workflow: Workflow) -> None:
    """Refuse a workflow whose context, trigger or any stage context is not JSON."""
    check_json(workflow.context, "workflow context")
    check_json(workflow.trigger, "workflow trigger")
    for stage in workflow.stages:
        check_json(stage.context, f"context of stage {stage.ref_id!r}", ref_id=stage.ref_id)
        check_json(stage.outputs, f"outputs of stage {stage.ref_id!r}", ref_id=stage.ref_id)


class WorkflowCache:
    """Workflows recently used by this process, reused while their version is current.

    A transition checks the stored version (one indexed read) and reloads the whole
    workflow only when another process changed it. Finished workflows are evicted.
    """

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Workflow] = OrderedDict()

    def get(self, workflow_id: str) -> Workflow | None:
        wf = self._items.get(workflow_id)
        if wf is not None:
            self._items.move_to_end(workflow_id)
        return wf

    def put(self, wf: Workflow) -> None:
        if wf.status.is_complete:
            self._items.pop(wf.id, None)
            return
        self._items[wf.id] = wf
        self._items.move_to_end(wf.id)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)

    def evict(self, workflow_id: str) -> None:
        self._items.pop(workflow_id, None)

    def clear(self) -> None:
        self._items.clear()


class Transaction:
    """One database transaction of a backend, used by the processor and the orchestrator.

    Obtain one from :meth:`Backend.transaction`; it commits when the ``with`` block exits
    normally and rolls back (and forgets cached workflows it touched) otherwise.
    """

    def __init__(
        self,
        backend: Backend,
        cur: Cursor,
        queries: dict[str, str],
        *,
        read_only: bool = False,
        event_table: str | Literal[False] | None = False,
    ) -> None:
        """``event_table``: the prefix the backend already resolved (False: resolve it)."""
        self.backend = backend
        self.cur = cur
        self.q = queries
        self.read_only = read_only
        self.touched: dict[str, Workflow] = {}
        self.recorded: list[tuple[str, int, EventDraft, int]] = []
        self.event_rows: dict[str, list[tuple[Any, ...]]] = {}
        """Rows of the log not yet inserted, per workflow (see :meth:`flush_events`)."""
        self.event_table: str | None = (
            backend.event_table_prefix() if event_table is False else event_table
        )

    # -- workflows -------------------------------------------------------------------

    def workflow(self, workflow_id: str) -> Workflow | None:
        """Load a workflow for a transition (from the cache when it is current).

        In a read-only transaction (:meth:`Backend.read`) this is a fresh copy: nothing is
        locked there, so a cached object another thread is changing must not be shared.
        """
        if workflow_id in self.touched:
            return self.touched[workflow_id]
        if self.read_only:
            fresh = self.read_workflow(workflow_id)
            if fresh is not None:
                self.touched[workflow_id] = fresh
            return fresh
        self.cur.execute(self.q["workflow_version"], (workflow_id,))
        row = self.cur.fetchone()
        if row is None:
            return None
        cached = self.backend.cache.get(workflow_id)
        if cached is None or cached.version != row[0]:
            cached = self.read_workflow(workflow_id)
            if cached is None:  # pragma: no cover - deleted between two reads of one txn
                return None
        self.touched[workflow_id] = cached
        return cached

    def read_workflow(self, workflow_id: str) -> Workflow | None:
        """Load a fresh copy of a workflow and its stages from the database."""
        self.cur.execute(self.q["load_workflow"], (workflow_id,))
        row = self.cur.fetchone()
        if row is None:
            return None
        self.cur.execute(self.q["load_stages"], (workflow_id,))
        stages = []
        for (body,) in self.cur.fetchall():
            stage = StageExecution.from_dict(loads(body))
            stage._written = body
            stages.append(stage)
        wf = Workflow.from_dict(loads(row[0]), stages, row[1], row[2])
        wf._written = row[0]
        return wf

    def read_stage(self, stage_id: str) -> StageExecution | None:
        """Load a fresh copy of one stage (not attached to its workflow), or ``None``.

        For checks that need one stage of a workflow, which may have thousands (issue 13).
        """
        self.cur.execute(self.q["load_stage"], (stage_id,))
        row = self.cur.fetchone()
        return None if row is None else StageExecution.from_dict(loads(row[0]))

    def insert_workflow(self, wf: Workflow, now: int) -> None:
        """Store a new workflow and its stages (version 1) and record ``workflow.created``."""
        wf.version = 1
        wf_row = wf.to_dict()
        wf_body = dumps(wf_row)
        stage_rows = [s.to_row() for s in wf.stages]
        stage_bodies = [dumps(row) for row in stage_rows]
        recording = self.event_table is not None
        # The rows as written are the baselines of the first diffs, and the event reuses
        # their encoding (never re-encoding the whole definition).
        wf._written = wf_body if recording else None
        for stage, body in zip(wf.stages, stage_bodies, strict=True):
            stage._written = body if recording else None
        data = {"workflow": wf_row, "stages": stage_rows}
        created = EventDraft(
            "workflow.created",
            "workflow",
            wf.id,
            data,
            encoded=f'{{"workflow":{wf_body},"stages":[{",".join(stage_bodies)}]}}',
        )
        self._record(wf, [created], now)
        self.cur.execute(
            self.q["insert_workflow"],
            (
                wf.id,
                wf.application,
                wf.name,
                wf.status.value,
                now,
                now,
                wf.version,
                wf.event_sequence,
                wf_body,
            ),
        )
        self.cur.executemany(
            self.q["insert_stage"],
            [
                (s.id, wf.id, i, s.ref_id, s.status.value, body)
                for i, (s, body) in enumerate(zip(wf.stages, stage_bodies, strict=True))
            ],
        )
        self.touched[wf.id] = wf

    def save(self, wf: Workflow, fx: Effects, now: int) -> None:
        """Write what a transition changed: rows, messages, events, one version bump."""
        if fx.drop_messages:
            self.cur.execute(self.q["drop_workflow_messages"], (wf.id,))
        elif fx.drop_timers:
            self.cur.executemany(
                self.q["drop_stage_messages"],
                [(wf.id, stage_id, kind) for kind, stage_id in fx.drop_timers],
            )
        if not (fx.stages or fx.workflow_changed or fx.events or fx.messages or fx.new_stages):
            return
        recording = self.event_table is not None
        added = {s.id: dumps(s.to_row()) for s in fx.new_stages}
        if added:
            position = {s.id: i for i, s in enumerate(wf.stages)}
            self.cur.executemany(
                self.q["insert_stage"],
                [
                    (s.id, wf.id, position[s.id], s.ref_id, s.status.value, added[s.id])
                    for s in fx.new_stages
                ],
            )
        rows = {s.id: s.to_row() for s in fx.stages.values() if s.id not in added}
        bodies = {i: dumps(row) for i, row in rows.items()}
        if bodies:
            self.cur.executemany(
                self.q["update_stage"],
                [(fx.stages[i].status.value, body, i) for i, body in bodies.items()],
            )
        wf_row = wf.to_dict() if fx.workflow_changed else None
        wf_body = dumps(wf_row) if wf_row is not None else None
        events = fx.events
        change = _state_change(wf, wf_row, wf_body, rows, bodies, added, fx, diffs=recording)
        if change:
            # First in the transition: at the sequence of any lifecycle event, the state
            # it announces is already there.
            events = [EventDraft("state.changed", "workflow", wf.id, change), *events]
        self._record(wf, events, now)
        wf.version += 1
        if wf_body is not None:
            self.cur.execute(
                self.q["update_workflow"],
                (
                    wf.status.value,
                    wf_body,
                    wf.version,
                    now,
                    wf.event_sequence,
                    wf.id,
                ),
            )
        else:
            self.cur.execute(self.q["bump_workflow"], (wf.version, now, wf.event_sequence, wf.id))
        self.touched[wf.id] = wf

    def _record(self, wf: Workflow, events: list[EventDraft], now: int) -> None:
        """Number the events of one transition and encode them for the log.

        The events of one workflow in one transaction share the time of its first
        transition there (they become one row of the log, see :meth:`flush_events`).
        Encoding happens here, so a value that is not JSON fails the transition that
        produced it.
        """
        if not events:
            return
        pending = self.event_rows.get(wf.id)
        if pending:
            now = pending[0][5]
        first = wf.event_sequence + 1
        for event in events:
            wf.event_sequence += 1
            self.recorded.append((wf.id, wf.event_sequence, event, now))
        if self.event_table is None:
            return  # not recording: numbered for live listeners only, nothing encoded
        row = event_row(wf.id, first, events, now)
        if pending is None:
            self.event_rows[wf.id] = [row]
        else:
            pending.append(row)

    def flush_events(self) -> None:
        """Insert the events recorded in this transaction: one row per workflow.

        Called by the backend just before it commits. Consecutive transitions of one
        workflow in one transaction have consecutive sequence numbers, so their rows merge
        into one, which spares an insert (and its index entries) per transition.
        """
        if not self.event_rows or self.event_table is None:
            return
        rows = [merge_event_rows(group) for group in self.event_rows.values()]
        self.event_rows = {}
        self._insert_event_rows(self.event_table, rows)

    def _insert_event_rows(self, event_table: str, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows of the log into the events table at ``event_table``."""
        self.cur.executemany(self.q["insert_event"].replace("{ev}", event_table), rows)

    # -- queue -----------------------------------------------------------------------

    def enqueue(
        self,
        messages: Sequence[Message],
        now: int,
        *,
        lease_owner: str | None = None,
        lease_until: int | None = None,
        lease_limit: int = 0,
    ) -> list[ClaimedMessage]:
        """Insert messages; up to ``lease_limit`` due ones are inserted leased to the owner.

        Leasing on insert lets the worker that produced a task run it without another
        commit to claim it; a crash before it runs only delays it until the lease expires.
        """
        claimed: list[ClaimedMessage] = []
        for m in messages:
            lease = lease_owner is not None and m.delay_ms <= 0 and len(claimed) < lease_limit
            owner = lease_owner if lease else None
            self.cur.execute(self.q["enqueue"], message_row(m, now, owner, lease_until))
            msg_id = self.cur.fetchone()[0]
            if lease:
                claimed.append(leased_message(msg_id, m))
        return claimed

    def claim(self, owner: str, now: int, lease_until: int, limit: int) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due messages whose lease is free or expired."""
        if limit <= 0:
            return []
        self.cur.execute(self.q["select_ready"], (now, now, limit))
        rows = self.cur.fetchall()
        claimed = []
        for row in rows:
            self.cur.execute(self.q["lease"], (owner, lease_until, row[0]))
            token, attempts = self.cur.fetchone()
            claimed.append(
                ClaimedMessage(
                    row[0], row[2], row[1], row[3], row[4], loads(row[5]), attempts, token
                )
            )
        return claimed

    def ack(self, msg: ClaimedMessage, owner: str) -> bool:
        """Delete a claimed message if this owner still holds its lease (the fence)."""
        self.cur.execute(self.q["ack"], (msg.id, msg.lease_token, owner))
        return bool(self.cur.rowcount == 1)

    def ack_many(self, msgs: Sequence[ClaimedMessage], owner: str) -> set[int]:
        """Acknowledge several claimed messages; return the ids whose lease still held."""
        return {msg.id for msg in msgs if self.ack(msg, owner)}

    def delete_message(self, msg_id: int) -> None:
        """Delete a message regardless of its lease."""
        self.cur.execute(self.q["delete_message"], (msg_id,))

    def dead_letter(self, msg: ClaimedMessage, reason: str, now: int) -> None:
        """Move a message to the dead-letter table."""
        self.cur.execute(self.q["dead_letter"], (reason, now, msg.id))
        self.delete_message(msg.id)

    def extend_leases(
        self, owner: str, leases: Iterable[tuple[int, int]], lease_until: int
    ) -> list[int]:
        """Extend the leases ``(id, token)`` this owner holds; return ids no longer held."""
        lost = []
        for msg_id, token in leases:
            self.cur.execute(self.q["extend_lease"], (lease_until, msg_id, token, owner))
            if self.cur.rowcount != 1:
                lost.append(msg_id)
        return lost

    def lease_owners(self, now: int) -> list[str]:
        """Owners holding unexpired leases."""
        self.cur.execute(self.q["lease_owners"], (now,))
        return [r[0] for r in self.cur.fetchall()]

    def release_owner(self, owner: str) -> int:
        """Make every lease of ``owner`` claimable at once (the owner is known dead)."""
        self.cur.execute(self.q["release_owner"], (owner,))
        return int(self.cur.rowcount)

    # -- mutual exclusion ----------------------------------------------------------------

    def acquire_mutex(self, key: str, workflow_id: str, stage_id: str, now: int) -> bool:
        """Take ``key`` for a stage, or join the line of waiters; True when taken."""
        self.cur.execute(self.q["mutex_holder"], (key,))
        holder = self.cur.fetchone()
        if holder is not None:
            if tuple(holder) == (workflow_id, stage_id):
                return True  # a re-delivered request of the holder itself
            self.cur.execute(self.q["mutex_wait"], (key, workflow_id, stage_id, now))
            return False
        self.cur.execute(self.q["mutex_try"], (key, workflow_id, stage_id, now))
        if self.cur.rowcount == 1:
            return True
        self.cur.execute(self.q["mutex_wait"], (key, workflow_id, stage_id, now))
        return False

    def release_mutex(self, key: str, stage_id: str) -> tuple[str, str] | None:
        """Give ``key`` up; return the next waiter ``(workflow_id, stage_id)``, if any."""
        self.cur.execute(self.q["mutex_release"], (key, stage_id))
        self.cur.execute(self.q["mutex_next_waiter"], (key,))
        row = self.cur.fetchone()
        if row is None:
            return None
        self.cur.execute(self.q["mutex_forget_waiter"], (row[0],))
        return str(row[1]), str(row[2])

    def queue_depth(self) -> tuple[int, int | None]:
        """Return (number of messages, earliest delivery time in epoch ms)."""
        self.cur.execute(self.q["queue_depth"])
        count, earliest = self.cur.fetchone()
        return int(count), earliest


def message_row(
    m: Message, now: int, lease_owner: str | None, lease_until: int | None
) -> tuple[Any, ...]:
    """The values of the ``enqueue`` query for ``m``, leased to ``lease_owner`` if given."""
    leased = lease_owner is not None
    return (
        m.workflow_id,
        m.kind,
        m.stage_id,
        m.task_id,
        dumps(m.payload),
        now + max(0, m.delay_ms),
        1 if leased else 0,
        lease_owner,
        1 if leased else 0,
        lease_until if leased else None,
        now,
    )


def leased_message(msg_id: int, m: Message) -> ClaimedMessage:
    """``m`` as the message its producer leased on insert (first attempt, first lease)."""
    return ClaimedMessage(msg_id, m.kind, m.workflow_id, m.stage_id, m.task_id, m.payload, 1, 1)


def event_row(
    workflow_id: str, first: int, events: Sequence[EventDraft], now: int
) -> tuple[Any, ...]:
    """The row of the log holding ``events`` (numbered from ``first``) of one transition.

    One event is stored as itself; several as one row spanning ``first .. last_sequence``
    whose data is the list of ``[event_type, entity_type, entity_id, data]`` (one encoding
    per transition instead of one per event; :func:`merge_event_rows` joins the rows of one
    workflow's transitions in one transaction).
    """
    if len(events) == 1:
        (event,) = events
        return (
            workflow_id,
            first,
            event.event_type,
            event.entity_type,
            event.entity_id,
            now,
            event.json(),
            None,
        )
    parts: list[str] = []
    pending: list[list[Any]] = []  # consecutive events to encode in one call
    strict = False  # whether one of them holds data a task handed over (see EventDraft.json)
    for e in events:
        if e.encoded is None:
            pending.append([e.event_type, e.entity_type, e.entity_id, e.data])
            strict = strict or e.event_type in USER_DATA_EVENTS
            continue
        if pending:
            parts.append((dumps if strict else dumps_known)(pending)[1:-1])
            pending, strict = [], False
        parts.append(_log_entry(e.event_type, e.entity_type, e.entity_id, e.encoded))
    if pending:
        parts.append((dumps if strict else dumps_known)(pending)[1:-1])
    body = f"[{','.join(parts)}]"
    last = first + len(events) - 1
    return (workflow_id, first, "*", "workflow", workflow_id, now, body, last)


def _log_entry(event_type: str, entity_type: str, entity_id: str, data: str) -> str:
    """One event in a row of several: ``[event_type, entity_type, entity_id, data]``.

    ``data`` is already encoded JSON.
    """
    head = dumps_known([event_type, entity_type, entity_id])
    return f"{head[:-1]},{data}]"


def merge_event_rows(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """One row of the log holding the events of ``rows``.

    ``rows`` (from :func:`event_row`) are of one workflow and their sequences follow each
    other; the merged row carries the first one's time.
    """
    if len(rows) == 1:
        return rows[0]
    items = []
    for row in rows:
        event_type, entity_type, entity_id, data, last = row[2], row[3], row[4], row[6], row[7]
        if last is None:  # a single event: its data only
            items.append(_log_entry(event_type, entity_type, entity_id, data))
        else:  # already a list of events
            items.append(data[1:-1])
    workflow_id, first, timestamp = rows[0][0], rows[0][1], rows[0][5]
    tail = rows[-1]
    last_sequence = tail[7] if tail[7] is not None else tail[1]
    body = f"[{','.join(items)}]"
    return (workflow_id, first, "*", "workflow", workflow_id, timestamp, body, last_sequence)


def _state_change(
    wf: Workflow,
    wf_row: dict[str, Any] | None,
    wf_body: str | None,
    rows: dict[str, dict[str, Any]],
    bodies: dict[str, str],
    added: dict[str, str],
    fx: Effects,
    *,
    diffs: bool,
) -> dict[str, Any]:
    """What a transition changed, as diffs of the rows: the event that makes replay exact.

    Only the changed keys are stored (never whole copies of a context), so the log grows
    with the size of the changes. Each model keeps the JSON of its row as last written
    (``_written``: the models are changed in place) and each diff is taken from that
    text, parsed, to the row as it is now. The text holds no objects for the garbage
    collector to walk, and a diff taken from what was stored replays to what is stored:
    where JSON changed a key (``1`` became ``"1"``) the diff both removes and sets it,
    and :func:`stabilize.events.diff.apply` removes first. When events are not recorded
    no baseline is kept, and the first diff after recording starts holds the whole row.
    """
    change: dict[str, Any] = {}
    if wf_row is not None:
        if diffs and (wf_diff := diff(_parsed(wf._written), wf_row)):
            change["workflow"] = wf_diff
        wf._written = wf_body if diffs else None
    stage_diffs: dict[str, Any] = {}
    for stage_id, row in rows.items():
        stage = fx.stages[stage_id]
        if diffs and (stage_diff := diff(_parsed(stage._written), row)):
            stage_diffs[stage_id] = stage_diff
        stage._written = bodies[stage_id] if diffs else None
    if stage_diffs:
        change["stages"] = stage_diffs
    for stage in fx.new_stages:
        stage._written = added[stage.id] if diffs else None
    if diffs and added:
        change["added"] = [loads(added[stage.id]) for stage in fx.new_stages]
    return change


def _parsed(written: str | None) -> dict[str, Any]:
    """A baseline row: the JSON last written, parsed (empty when there is none)."""
    return loads(written) if written is not None else {}


class Backend(ABC):
    """A database shared by a store and a queue (and, optionally, the event log)."""

    dialect: str
    placeholder: str = "?"
    """The parameter marker of the dialect's driver."""

    def __init__(self) -> None:
        self.cache = WorkflowCache()
        self.lock = threading.RLock()
        self.registries: weakref.WeakSet[TaskRegistry] = weakref.WeakSet()

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """Open a write transaction (serialised per workflow by the database)."""

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """Open a read-only view for queries that change nothing."""

    def event_table_prefix(self) -> str | None:
        """Where events go in this database: a schema prefix, or None when not recording."""
        from stabilize.events.recorder import event_table_for

        return event_table_for(self)

    @abstractmethod
    def own_event_store(self) -> EventStore:
        """The event log in this database (where events go unless configured otherwise)."""

    @staticmethod
    def open_backends() -> list[Backend]:
        """The backends open in this process (SQLite files and PostgreSQL schemas)."""
        from stabilize.backends.postgres import PostgresBackend
        from stabilize.backends.sqlite import SqliteBackend

        found: list[Backend] = list(SqliteBackend.open_instances())
        found.extend(PostgresBackend.open_instances())
        return found

    def has_workflow(self, workflow_id: str) -> bool:
        """True when this database holds the workflow."""
        with self.read() as tx:
            tx.cur.execute(tx.q["workflow_exists"], (workflow_id,))
            return tx.cur.fetchone() is not None

    @abstractmethod
    def close(self) -> None:
        """Close connections."""

    @property
    @abstractmethod
    def location(self) -> str:
        """A human-readable location of the database (a file path or a URL without secrets)."""

    def is_transient_error(self, exc: BaseException) -> bool:
        """True when ``exc`` is a database error worth retrying (busy, deadlock, lost link)."""
        return False

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Block until new work may be due or ``timeout`` seconds pass (default: sleep).

        Args:
            timeout: The most seconds to wait.
            stop: Return at once when it is set, even if it was set just before the wait
                began (a :meth:`wake_waiters` then would have found no waiter to wake).
        """
        if stop is not None:
            stop.wait(timeout)
        else:
            time.sleep(timeout)

    def wake_waiters(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Make :meth:`wait_for_work` calls of this process return early (default: none)."""

    def notify_committed(self, recorded: list[tuple[str, int, EventDraft, int]]) -> None:
        """Deliver events that were just committed to in-process listeners."""
        from stabilize.events.bus import get_event_bus
        from stabilize.events.model import Event
        from stabilize.events.recorder import publishing_enabled

        bus = get_event_bus()
        if not bus.has_listeners or not publishing_enabled():
            return
        for workflow_id, sequence, draft, timestamp in recorded:
            if draft.event_type == "custom.progress":
                continue  # emit_progress delivered it live already
            bus.publish(
                Event(
                    workflow_id,
                    sequence,
                    draft.event_type,
                    draft.entity_type,
                    draft.entity_id,
                    timestamp,
                    draft.data,
                )
            )
