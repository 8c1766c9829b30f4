"""The SQLite backend: one file holds workflows, stages, the queue and the event log.

Every transaction starts with ``BEGIN IMMEDIATE``, which takes SQLite's write lock at once:
transitions of all workflows in the file are serialised, across threads and processes, and
no transaction can fail half-way on a lock upgrade. Journal mode and the synchronous level
come from ``STABILIZE_SQLITE_JOURNAL_MODE`` and ``STABILIZE_SQLITE_SYNCHRONOUS``.

The event log of a file is read through a connection of its own
(:class:`SqliteEventStore`); a log kept in another file is attached to the engine's
connection, so events are still appended in the transaction of their transition.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from stabilize.backends._base import Backend, CommitWatcher, Cursor, EventStore, Transaction
from stabilize.backends._wakeups import LocalWakeups
from stabilize.backends.sql import migrations, queries, resource_text
from stabilize.backends.sqlite._checkpoint import Checkpointer
from stabilize.backends.sqlite._files import check_directory, connect_existing, sqlite_path
from stabilize.backends.sqlite._schema import (
    EVENT_ROWID_TIME_SHIFT,
    check_schema_version,
    statements,
    upgrade_event_table,
)
from stabilize.backends.sqlite._settings import sqlite_settings
from stabilize.backends.sqlite._watch import DataVersionWatcher
from stabilize.errors import EventStoreError, SchemaVersionError
from stabilize.events.log import select_events_params, unpack
from stabilize.events.recording import event_table_for, publish_committed
from stabilize.models.event import Event

DATA_VERSION_INTERVAL = 0.005
"""Seconds between two checks, by an idle worker, for commits of other processes."""

_QUERIES = queries("sqlite")


class SqliteBackend(Backend):
    """A SQLite file shared by every store and queue of this process that names it.

    Use :meth:`for_url`: it returns the one backend of a file, so that a store and a queue
    on the same file share a connection and therefore transactions.
    """

    dialect = "sqlite"
    _instances: weakref.WeakValueDictionary[str, SqliteBackend] = weakref.WeakValueDictionary()
    _instances_lock = threading.Lock()

    @classmethod
    def for_url(cls, url: str, *, create: bool = True) -> SqliteBackend:
        """Return the process-wide backend of the file ``url`` names (opening it if needed).

        Args:
            url: ``sqlite:///path/to/file.db`` or a path.
            create: Create the file and apply pending migrations; otherwise the file must
                hold a stabilize database at the current version, and is left untouched
                when it does not.

        Raises:
            SchemaVersionError: the file is newer than this stabilize (or, without
                ``create``, older).
            DatabaseNotFoundError: without ``create``, there is no stabilize database.
        """
        path = sqlite_path(url)
        with cls._instances_lock:
            backend = cls._instances.get(path) if path != ":memory:" else None
            if backend is None:
                backend = cls(path, create=create)
                if path != ":memory:":
                    cls._instances[path] = backend
            return backend

    @classmethod
    def open_instances(cls) -> list[SqliteBackend]:
        """The file backends of this process, oldest first (in-memory ones are not listed)."""
        with cls._instances_lock:
            return list(cls._instances.values())

    def __init__(self, path: str, *, create: bool = True) -> None:
        super().__init__()
        self.path = path
        self.journal_mode, self.synchronous = sqlite_settings()
        # The lock in Backend serialises threads; check_same_thread would refuse a
        # connection opened by the user's thread and used by the processor's.
        if create:
            if path != ":memory:":
                check_directory(path)
            self.conn = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=60
            )
        else:
            self.conn = connect_existing(path)
        self.conn.execute("PRAGMA busy_timeout = 60000")
        try:
            # Before any pragma below: a journal mode change writes to a file that may
            # belong to a newer stabilize.
            check_schema_version(self.conn, path, current=not create)
        except BaseException:
            self.conn.close()
            raise
        if self.journal_mode is not None:
            self.conn.execute(f"PRAGMA journal_mode = {self.journal_mode}")
        self.journal_mode = str(self.conn.execute("PRAGMA journal_mode").fetchone()[0]).upper()
        if not os.environ.get("STABILIZE_SQLITE_SYNCHRONOUS", "").strip():
            # The file may be in WAL from an earlier run without the variable set.
            self.synchronous = "NORMAL" if self.journal_mode == "WAL" else "FULL"
        self.conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        self.conn.execute("PRAGMA foreign_keys = ON")
        self.checkpointer: Checkpointer | None = None
        if self.journal_mode == "WAL" and path != ":memory:":
            # Checkpoints run on a thread of their own, not inside a commit.
            self.conn.execute("PRAGMA wal_autocheckpoint = 0")
            self.checkpointer = Checkpointer(path)
            weakref.finalize(self, self.checkpointer.stop)
        self.queries = _QUERIES
        self._wakeups = LocalWakeups()
        self._versions_seen = threading.local()
        self._attached: str | None = None
        self._own_events: SqliteEventStore | None = None
        self.migrate()

    @property
    def location(self) -> str:
        """The absolute path of the database file."""
        return self.path

    def migrate(self) -> int:
        """Apply the schema migrations this file lacks; return the schema version.

        Raises:
            SchemaVersionError: the file was written by a newer stabilize.
        """
        known = migrations("sqlite")
        latest = known[-1][0]
        with self.lock:
            current = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
            if current > latest:
                raise SchemaVersionError(
                    f"{self.path} has schema version {current}, but this stabilize knows only "
                    f"up to {latest}: upgrade stabilize-core to open it"
                )
            if current == latest:
                upgrade_event_table(self.conn)
                return current
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                current = int(self.conn.execute("PRAGMA user_version").fetchone()[0])
                for version, sql in known:
                    if version > current:
                        for statement in statements(sql):
                            self.conn.execute(statement)
                upgrade_event_table(self.conn)
                self.conn.execute(f"PRAGMA user_version = {latest}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return latest

    def event_table_prefix(self) -> str | None:
        """Where this file's transactions append events now (see ``event_table_for``)."""
        return event_table_for(self)

    def own_event_store(self) -> EventStore:
        """The event log in this file, read through a connection of its own."""
        if self.path == ":memory:":
            raise EventStoreError(
                "an in-memory SQLite database cannot be read from another connection: "
                "pass event_store= explicitly or use a file"
            )
        with self.lock:
            if self._own_events is None:
                self._own_events = SqliteEventStore(f"sqlite:///{self.path}", create_tables=False)
            return self._own_events

    def events_prefix_for_file(self, target: str) -> str:
        """``""`` if ``target`` is this file, else attach it as ``ev`` and return ``"ev."``."""
        if target == self.path:
            return ""
        with self.lock:
            if self._attached != target:
                if self._attached is not None:
                    self.conn.execute("DETACH DATABASE ev")
                self.conn.execute("ATTACH DATABASE ? AS ev", (target,))
                self._attached = target
        return "ev."

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction (``BEGIN IMMEDIATE``)."""
        with self.lock:
            # Resolved before BEGIN: attaching a separate event file cannot happen inside.
            prefix = event_table_for(self)
            cur = self.conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            tx = Transaction(self, cur, self.queries, event_table=prefix)
            try:
                yield tx
                tx.flush_events()
                cur.execute("COMMIT")
                if self.checkpointer is not None:
                    self.checkpointer.committed(self.conn)
            except BaseException:
                if self.conn.in_transaction:
                    cur.execute("ROLLBACK")
                for wf_id in tx.touched:
                    self.cache.evict(wf_id)
                raise
            for wf in tx.touched.values():
                self.cache.put(wf, tx.as_of)
        if tx.claimable:
            self.committed_claimable(tx)
            self._wakeups.wake()
        if tx.recorded:
            publish_committed(tx.recorded)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A consistent read-only view (a deferred transaction)."""
        with self.lock:
            cur = self.conn.cursor()
            cur.execute("BEGIN")
            try:
                yield Transaction(self, cur, self.queries, read_only=True)
            finally:
                if self.conn.in_transaction:
                    cur.execute("COMMIT")

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Block until new work may be due, ``stop`` is set, or ``timeout`` seconds pass.

        A commit of this process that enqueued claimable work wakes the wait at once; a
        commit of another connection (another worker process) is noticed within
        :data:`DATA_VERSION_INTERVAL` through the file's ``PRAGMA data_version``.
        """
        deadline = time.monotonic() + timeout
        seen = self._versions_seen
        version = self._data_version()
        # A foreign commit since this thread's last wait (while it was busy) counts too.
        changed = getattr(seen, "version", version) != version
        while not changed:
            left = deadline - time.monotonic()
            if left <= 0 or self._wakeups.wait(min(left, DATA_VERSION_INTERVAL), stop):
                break
            if stop is not None and stop.is_set():
                break
            current = self._data_version()
            changed, version = current != version, current
        seen.version = version

    def foreign_commits(self, cur: Cursor) -> int:
        """The file's ``PRAGMA data_version``: it moves when another connection commits.

        Read inside a write transaction (``BEGIN IMMEDIATE`` holds the write lock, so it
        cannot move before the commit); every write of this backend to a workflow goes
        through its transactions, which keep the cache current.
        """
        cur.execute("PRAGMA data_version")
        return int(cur.fetchone()[0])

    def _data_version(self) -> int:
        # Changes when another connection commits to the file (never for this one's own
        # commits, which wake the waiters directly).
        with self.lock:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def wake_waiters(self) -> None:
        """Make every :meth:`wait_for_work` of this process return now (e.g. on stop)."""
        self._wakeups.wake()

    def is_transient_error(self, exc: BaseException) -> bool:
        """SQLite's ``database is locked`` / ``busy`` errors are worth retrying."""
        if not isinstance(exc, sqlite3.OperationalError):
            return False
        text = str(exc).lower()
        return "locked" in text or "busy" in text

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Run one statement outside the engine's transactions (for listings)."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection (and the reader of :meth:`own_event_store`).

        The next store or queue opened on the file opens it afresh.
        """
        with SqliteBackend._instances_lock:
            if SqliteBackend._instances.get(self.path) is self:
                del SqliteBackend._instances[self.path]
        with self.lock:
            if self.checkpointer is not None:
                self.checkpointer.close()
            if self._own_events is not None:
                self._own_events.close()
            self.conn.close()


class SqliteEventStore:
    """The event log in a SQLite file.

    When it is the engine's own file, events are appended in the engine's transaction.
    When it is another file, that file is attached to the engine's connection: the append
    still happens in the same transaction, atomic per file (SQLite does not make a commit
    across two WAL files atomic if the machine loses power in between).

    Args:
        connection_string: ``sqlite:///path/to/events.db``.
        create_tables: Create the ``events`` table if it does not exist.
    """

    def __init__(self, connection_string: str, create_tables: bool = True) -> None:
        self.path = sqlite_path(connection_string)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=60
        )
        self._conn.execute("PRAGMA busy_timeout = 60000")
        try:
            check_schema_version(self._conn, self.path)  # a newer engine file is refused
        except BaseException:
            self._conn.close()
            raise
        if create_tables:
            # The table migration 0003 creates in an engine's file, here in this one.
            script = resource_text("sqlite", "0003_events.sql")
            with self._lock:
                self._conn.executescript(script)
                upgrade_event_table(self._conn)

    def event_table_for(self, backend: Backend) -> str | None:
        """``""`` for the engine's own file, ``"ev."`` for another one (attached), else None."""
        if not isinstance(backend, SqliteBackend):
            return None
        return backend.events_prefix_for_file(self.path)

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        sql = _QUERIES["select_events" if limit is None else "select_events_limit"]
        with self._lock:
            rows = self._conn.execute(sql, select_events_params(workflow_id, since, limit))
            return unpack(rows.fetchall(), since, limit)

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms``, and the last sequence of each.

        Args:
            since_ms: Epoch milliseconds (the time the engine wrote with the transition).
            application: Only workflows of this application (needs the log in the
                engine's own file, beside the ``workflows`` table).

        Raises:
            EventStoreError: ``application`` was given for a log kept in a file of its own.
        """
        sql = _QUERIES["recent_heads" if application is None else "recent_heads_of_application"]
        params: tuple[Any, ...] = (int(since_ms) << EVENT_ROWID_TIME_SHIFT, since_ms)
        if application is not None:
            params += (application,)
        with self._lock:
            try:
                rows = self._conn.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if application is not None and "workflows" in str(exc):
                    raise EventStoreError(
                        f"{self.path} holds no workflows table: filtering by application "
                        "needs the event log in the engine's own database"
                    ) from None
                raise
        return {str(wf): int(seq) for wf, seq in rows}

    def count(self) -> int:
        """The number of events stored."""
        with self._lock:
            return int(self._conn.execute(_QUERIES["count_events"]).fetchone()[0])

    def watch(
        self, workflow_id: str | None = None, *, interval: float | None = None
    ) -> CommitWatcher:
        """A watcher of commits to this file (by any connection of any process).

        SQLite cannot say which workflow a commit was for: every commit to the file
        counts. It is noticed through the file's ``data_version``, looked at every
        ``interval`` seconds, and commits of this process at once.

        Args:
            workflow_id: Commits of this process count only for this workflow.
            interval: Seconds between two looks (None: ``WATCH_INTERVAL``).

        Raises:
            EventStoreError: the store is an in-memory database.
        """
        if self.path == ":memory:":
            raise EventStoreError("an in-memory SQLite database cannot be watched")
        return DataVersionWatcher(self.path, workflow_id, interval)

    def close(self) -> None:
        """Close this store's own connection."""
        with self._lock:
            self._conn.close()
