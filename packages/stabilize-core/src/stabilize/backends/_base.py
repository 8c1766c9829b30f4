"""The storage interface: one database holding workflows, stages, the queue and events.

Everything above this layer (store, queue, processor, orchestrator, streams) is
dialect-free. Each dialect is a package (``stabilize.backends.<dialect>``) that supplies a
DB-API connection, its named queries, its event store and its way of noticing commits; the
transaction logic here is shared, so the dialects cannot drift apart.
:mod:`stabilize.backends._schemes` maps database URLs to the dialects.
"""

from __future__ import annotations

import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

from stabilize._json import dumps, loads
from stabilize.backends._freed import FreedIds
from stabilize.backends._rows import (
    event_row,
    leased_message,
    merge_event_rows,
    message_row,
    state_change,
)
from stabilize.models.event import Event, EventType
from stabilize.models.stage import StageExecution
from stabilize.models.workflow import Workflow
from stabilize.records import ClaimedMessage, Effects, EventDraft, Message


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


class WorkflowCache:
    """Workflows recently used by this process, reused while their version is current.

    A transition checks the stored version (one indexed read) and reloads the whole
    workflow only when another process changed it. Finished workflows are evicted.

    Where the database can tell that no other connection committed since a workflow was
    cached (SQLite's ``data_version``, see :attr:`Transaction.as_of`), the entry is
    stamped with that counter and trusted without the read while it has not moved.
    """

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Workflow] = OrderedDict()
        self._as_of: dict[str, int] = {}

    def get(self, workflow_id: str) -> Workflow | None:
        wf = self._items.get(workflow_id)
        if wf is not None:
            self._items.move_to_end(workflow_id)
        return wf

    def current(self, workflow_id: str, as_of: int) -> Workflow | None:
        """The cached workflow if it was put as of the change counter ``as_of``."""
        if self._as_of.get(workflow_id) != as_of:
            return None
        return self.get(workflow_id)

    def put(self, wf: Workflow, as_of: int | None = None) -> None:
        """Cache ``wf`` (stamped with ``as_of``, when given; see :meth:`current`)."""
        if wf.status.is_complete:
            self.evict(wf.id)
            return
        self._items[wf.id] = wf
        self._items.move_to_end(wf.id)
        if as_of is None:
            self._as_of.pop(wf.id, None)
        else:
            self._as_of[wf.id] = as_of
        while len(self._items) > self.capacity:
            dropped, _ = self._items.popitem(last=False)
            self._as_of.pop(dropped, None)

    def evict(self, workflow_id: str) -> None:
        self._items.pop(workflow_id, None)
        self._as_of.pop(workflow_id, None)

    def clear(self) -> None:
        self._items.clear()
        self._as_of.clear()


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
        self.claimable = 0
        """Messages enqueued due now and leased to no one, and leases released: idle
        workers may take them."""
        self.recorded: list[tuple[str, int, EventDraft, int]] = []
        self.event_rows: dict[str, list[tuple[Any, ...]]] = {}
        """Rows of the log not yet inserted, per workflow (see :meth:`flush_events`)."""
        self.event_table: str | None = (
            backend.event_table_prefix() if event_table is False else event_table
        )
        self.freed = FreedIds()
        """Ids of messages acknowledged in this transaction, for the messages it enqueues
        (see :meth:`ack`)."""
        self.as_of: int | None = None
        """The backend's count of other connections' commits, read with the first
        workflow this transaction loads, when it keeps one (SQLite's ``data_version``):
        a cached workflow stamped with it is current without reading its version (see
        :class:`WorkflowCache`)."""
        self._as_of_read = False

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
        if not self._as_of_read:
            self._as_of_read = True
            self.as_of = self.backend.foreign_commits(self.cur)
        if self.as_of is not None:
            cached = self.backend.cache.current(workflow_id, self.as_of)
            if cached is not None:
                self.touched[workflow_id] = cached
                return cached
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

    def forget(self, workflow_ids: Iterable[str]) -> None:
        """Drop workflows this transaction deletes from the cache (and from ``touched``).

        At once, not after the commit: a cached workflow stamped as current (see
        :attr:`as_of`) must not outlive its rows for the next transaction of this process.
        """
        for workflow_id in workflow_ids:
            self.touched.pop(workflow_id, None)
            self.backend.cache.evict(workflow_id)

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

    def read_stages(self, stage_ids: Collection[str]) -> dict[str, StageExecution]:
        """Fresh copies of the stages ``stage_ids`` that exist, by id (see :meth:`read_stage`).

        One statement per stage here; a dialect whose statements cost a round trip reads
        them in one.
        """
        found = {stage_id: self.read_stage(stage_id) for stage_id in dict.fromkeys(stage_ids)}
        return {stage_id: stage for stage_id, stage in found.items() if stage is not None}

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
            EventType.WORKFLOW_CREATED.value,
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
        change = state_change(wf, wf_row, wf_body, rows, bodies, added, fx, diffs=recording)
        if change:
            # First in the transition: at the sequence of any lifecycle event, the state
            # it announces is already there.
            events = [EventDraft(EventType.STATE_CHANGED.value, "workflow", wf.id, change), *events]
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
            freed = self.freed.take(m.workflow_id) if self.freed else None
            if freed is not None:
                msg_id, token = freed[0], freed[1] + 1
                row = message_row(m, now, owner, lease_until, token)
                self.cur.execute(self.q["enqueue_as"], (msg_id, *row))
            else:
                self.cur.execute(self.q["enqueue"], message_row(m, now, owner, lease_until))
                msg_id, token = self.cur.fetchone()[0], 1
                self.freed.given(msg_id)
            if lease:
                claimed.append(leased_message(msg_id, m, token))
            elif m.delay_ms <= 0:
                self.claimable += 1
        return claimed

    def claim(self, owner: str, now: int, lease_until: int, limit: int) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due messages whose lease is free or expired (one statement).

        In the order they are due (``deliver_at``, then ``id``), with their new lease
        token and attempt count.
        """
        if limit <= 0:
            return []
        self.cur.execute(self.q["claim"], (owner, lease_until, now, now, limit))
        rows = sorted(self.cur.fetchall(), key=lambda r: (r[8], r[0]))
        return [ClaimedMessage(r[0], r[2], r[1], r[3], r[4], loads(r[5]), r[6], r[7]) for r in rows]

    def ack(self, msg: ClaimedMessage, owner: str) -> bool:
        """Delete a claimed message if this owner still holds its lease (the fence).

        Its id is free for a message the same transaction enqueues (:meth:`enqueue`): a
        chain's next message goes back into the row its predecessor left, which spares
        SQLite a new rowid (the ``AUTOINCREMENT`` counter's page) and a second place in
        the table. The new message's lease token starts above the old one's, so that no
        lease of the old message can fence the new one.
        """
        self.cur.execute(self.q["ack"], (msg.id, msg.lease_token, owner))
        if self.cur.rowcount != 1:
            return False
        self.freed.free(msg.workflow_id, msg.id, msg.lease_token)
        return True

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
        released = int(self.cur.rowcount)
        self.claimable += released
        return released

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


class TaskTypes(Protocol):
    """What a store asks of the task registries attached to its database."""

    def has(self, name: str) -> bool:
        """True when a task of type ``name`` can run."""
        ...


class Backend(ABC):
    """A database shared by a store and a queue (and, optionally, the event log)."""

    dialect: str
    """The name of the dialect (for messages and diagnostics; nothing branches on it)."""
    placeholder: str = "?"
    """The parameter marker of the dialect's driver."""

    def __init__(self) -> None:
        self.cache = WorkflowCache()
        self.lock = threading.RLock()
        self.registries: weakref.WeakSet[TaskTypes] = weakref.WeakSet()
        """The task registries of the processors attached to this database in this process
        (a store refuses a workflow none of them can run)."""
        self.claimable_commits = 0
        """How many commits of this process left work any worker may claim (messages due
        and not leased, see :attr:`Transaction.claimable`). A busy processor that found
        the queue empty claims again at once when it moves (see
        ``QueueProcessorConfig.busy_claim_interval_ms``)."""
        self._claimable_lock = threading.Lock()

    def committed_claimable(self, tx: Transaction) -> None:
        """Count ``tx``, just committed, if it left work to claim (backends call this)."""
        if tx.claimable:
            with self._claimable_lock:
                self.claimable_commits += 1

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Transaction]:
        """Open a write transaction (serialised per workflow by the database)."""

    def foreign_commits(self, cur: Cursor) -> int | None:
        """A counter that moves whenever another connection commits, read in a transaction.

        None (the default) when the database keeps none; then every cached workflow's
        version is read before it is used. A backend that returns one must make every
        write of this process to a workflow go through a transaction's ``touched``
        workflows (which it caches stamped with :attr:`Transaction.as_of` after the
        commit) or through :meth:`Transaction.forget`.
        """
        del cur
        return None

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """Open a read-only view for queries that change nothing."""

    @abstractmethod
    def event_table_prefix(self) -> str | None:
        """Where this database's transactions append events now (see ``event_table_for``).

        ``""`` for the ``events`` table of this database, a qualifier when the configured
        event store is reachable from its transactions, None when nothing is recorded.
        """

    @abstractmethod
    def own_event_store(self) -> EventStore:
        """The event log in this database (where events go unless configured otherwise)."""

    @classmethod
    def open_instances(cls) -> Sequence[Backend]:
        """The backends of this class that this process has open, oldest first."""
        return []

    @staticmethod
    def open_backends() -> list[Backend]:
        """The backends open in this process, of every dialect loaded.

        A dialect whose package was never imported has none open.
        """
        found: list[Backend] = []
        classes = Backend.__subclasses__()
        while classes:
            cls = classes.pop(0)
            if "open_instances" in vars(cls):
                found.extend(cls.open_instances())
            classes.extend(cls.__subclasses__())
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


class CommitWatcher(Protocol):
    """Notices commits that may have recorded events (from :meth:`EventStore.watch`).

    Each dialect notices commits of every process its own way (PostgreSQL: ``LISTEN`` for
    the ``NOTIFY`` each such commit sends; SQLite: the file's ``data_version``), and commits
    of this process at once (the backends publish what they commit to the event bus). A
    watcher whose connection breaks reconnects by itself: ``wait`` then returns True,
    since commits may have gone unnoticed meanwhile. Readers still read the log now and
    then: a watcher says when to read, the log says what is new.
    """

    def wait(self, timeout: float) -> bool:
        """Block until a commit is noticed, ``timeout`` seconds pass, or :meth:`wake`.

        Args:
            timeout: The most seconds to wait.

        Returns:
            True when commits may have happened since the watcher was made or the last
            ``wait`` returned True; False after the timeout or a :meth:`wake`.
        """
        ...

    def wake(self) -> None:
        """Make the running ``wait`` (or the next one, if none runs) return now."""
        ...

    def close(self) -> None:
        """Stop watching and release the watcher's connection."""
        ...

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        ...


class EventStore(Protocol):
    """Where recorded events are kept (``SqliteEventStore``, ``PostgresEventStore``)."""

    def event_table_for(self, backend: Backend) -> str | None:
        """The prefix of the ``events`` table inside ``backend``'s transactions.

        ``""`` when the table is in the backend's own database (and schema), a qualifier
        such as ``"ev."`` when it is reachable from the same transaction, or None when
        events of that backend cannot be recorded atomically here (nothing is recorded).
        """
        ...

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        ...

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms`` -> their last sequence.

        ``since_ms`` compares with the time the engine wrote in each transition (its clock
        when the transaction began, before it committed): readers that follow the log
        through this query look back a little to cover transactions still committing.
        """
        ...

    def count(self) -> int:
        """The number of events stored."""
        ...

    def watch(
        self, workflow_id: str | None = None, *, interval: float | None = None
    ) -> CommitWatcher:
        """A watcher of the commits that may add events (of ``workflow_id``, or any).

        Made before a reader's first read of the log, it notices every later commit.

        Args:
            workflow_id: Only this workflow's commits, where the store can tell them apart
                (``None``: any commit).
            interval: Seconds between two looks, for a store that has to look for
                commits rather than being told (None: its default); a store that is
                told ignores it.

        Raises:
            EventStoreError: this log cannot be watched (an in-memory SQLite database).
        """
        ...

    def close(self) -> None:
        """Release this store's own connections."""
        ...
