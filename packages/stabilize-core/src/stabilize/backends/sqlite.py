"""The SQLite backend: one file holds workflows, stages, the queue and the event log.

Every transaction starts with ``BEGIN IMMEDIATE``, which takes SQLite's write lock at once:
transitions of all workflows in the file are serialised, across threads and processes, and
no transaction can fail half-way on a lock upgrade. Journal mode and the synchronous level
come from ``STABILIZE_SQLITE_JOURNAL_MODE`` and ``STABILIZE_SQLITE_SYNCHRONOUS``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stabilize.backends._base import Backend, Transaction
from stabilize.backends._sqlite_checkpoint import Checkpointer
from stabilize.backends.sql import migrations, queries
from stabilize.errors import DatabaseNotFoundError, EventStoreError, SchemaVersionError

if TYPE_CHECKING:
    from stabilize.events.recorder import EventStore, SqliteEventStore

JOURNAL_MODES = frozenset({"DELETE", "TRUNCATE", "PERSIST", "MEMORY", "WAL", "OFF"})
SYNCHRONOUS_LEVELS = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})


def sqlite_path(url: str) -> str:
    """Turn ``sqlite:///relative.db``, ``sqlite:////abs.db`` or a plain path into a path.

    Raises:
        ValueError: the URL has another scheme or no path.
    """
    if url.startswith("sqlite://"):
        rest = url[len("sqlite://") :]
        if not rest.startswith("/"):
            raise ValueError(f"invalid SQLite URL {url!r}: expected sqlite:///path/to/file.db")
        path = rest[1:]
    elif "://" in url:
        raise ValueError(f"not a SQLite URL: {url!r} (expected sqlite:///path/to/file.db)")
    else:
        path = url
    path = path.split("?", 1)[0]
    if not path:
        raise ValueError(f"invalid SQLite URL {url!r}: no file path")
    if path == ":memory:":
        return path
    return str(Path(path).expanduser().resolve())


def latest_version() -> int:
    """The newest schema version this stabilize knows for SQLite."""
    return migrations("sqlite")[-1][0]


def connect_existing(path: str) -> sqlite3.Connection:
    """Open the SQLite file at ``path`` without ever creating it.

    Raises:
        DatabaseNotFoundError: there is no such file.
    """
    if path == ":memory:":
        raise DatabaseNotFoundError("an in-memory SQLite database holds no stabilize database yet")
    if not Path(path).is_file():
        raise DatabaseNotFoundError(
            f"no stabilize database at {path} (run 'stabilize mg-up --db-url sqlite:///{path}' "
            "to create one)"
        )
    # mode=rw: a file deleted since the check above must not come back empty.
    uri = f"file:{urllib.parse.quote(path)}?mode=rw"
    try:
        return sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=60
        )
    except sqlite3.OperationalError as exc:
        raise DatabaseNotFoundError(f"cannot open {path}: {exc}") from None


def check_directory(path: str) -> None:
    """Refuse to create a database file in a directory that does not exist.

    A typo in a URL must not leave a directory tree behind (issue 15): the directory is
    the user's to create.

    Raises:
        DatabaseNotFoundError: naming the file and the missing directory.
    """
    parent = Path(path).parent
    if not parent.is_dir():
        what = "is not a directory" if parent.exists() else "does not exist"
        raise DatabaseNotFoundError(
            f"cannot create the SQLite database {path}: the directory {parent} {what} "
            "(create it first, or check the path in the URL)"
        )


def check_schema_version(conn: sqlite3.Connection, path: str, *, current: bool = False) -> int:
    """Read the file's schema version; refuse a newer one (or, if ``current``, any other).

    Args:
        conn: A connection to the file.
        path: The file (for messages).
        current: Also refuse a file with no stabilize schema or an older one: what an
            open-only path needs, which must neither create nor migrate.

    Returns:
        The schema version (``PRAGMA user_version``).

    Raises:
        SchemaVersionError: the file was written by a newer stabilize, or (``current``)
            is older than this one.
        DatabaseNotFoundError: (``current``) the file is not a stabilize database.
    """
    latest = latest_version()
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        if not current:
            raise
        raise DatabaseNotFoundError(f"no stabilize database at {path}: {exc}") from None
    if version > latest:
        raise SchemaVersionError(
            f"{path} has schema version {version}, but this stabilize knows only "
            f"up to {latest}: upgrade stabilize-core to open it"
        )
    if current and version == 0:
        raise DatabaseNotFoundError(
            f"no stabilize database at {path}: the file holds no stabilize tables (run "
            f"'stabilize mg-up --db-url sqlite:///{path}' to create them)"
        )
    if current and version < latest:
        raise SchemaVersionError(
            f"{path} is at schema version {version}, this stabilize needs {latest}: run "
            f"'stabilize mg-up --db-url sqlite:///{path}' to migrate it"
        )
    return version


def check_event_log(url: str) -> None:
    """Check, changing nothing, that the file ``url`` names holds an event log to read.

    That is an engine's database at the current version, or a log kept in a file of its
    own (an ``events`` table and no stabilize schema version).

    Raises:
        DatabaseNotFoundError: there is no such file, or it holds no event log.
        SchemaVersionError: the file is an engine's database at another version.
    """
    path = sqlite_path(url)
    conn = connect_existing(path)
    try:
        find = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        try:
            standalone = conn.execute(find).fetchone() is not None
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise DatabaseNotFoundError(f"no stabilize database at {path}: {exc}") from None
        if not standalone or check_schema_version(conn, path) != 0:
            check_schema_version(conn, path, current=True)
    finally:
        conn.close()


def sqlite_settings(env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """Return (journal mode or None to keep the file's, synchronous level) from the env.

    Raises:
        ValueError: an environment variable holds an unknown value.
    """
    env = dict(os.environ) if env is None else env
    journal = env.get("STABILIZE_SQLITE_JOURNAL_MODE", "").strip().upper() or None
    if journal is not None and journal not in JOURNAL_MODES:
        raise ValueError(
            f"STABILIZE_SQLITE_JOURNAL_MODE={journal!r} is not one of {sorted(JOURNAL_MODES)}"
        )
    sync = env.get("STABILIZE_SQLITE_SYNCHRONOUS", "").strip().upper()
    if not sync:
        sync = "NORMAL" if journal == "WAL" else "FULL"
    if sync not in SYNCHRONOUS_LEVELS:
        raise ValueError(
            f"STABILIZE_SQLITE_SYNCHRONOUS={sync!r} is not one of {sorted(SYNCHRONOUS_LEVELS)}"
        )
    return journal, sync


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
        self.queries = queries("sqlite")
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
                        for statement in _statements(sql):
                            self.conn.execute(statement)
                upgrade_event_table(self.conn)
                self.conn.execute(f"PRAGMA user_version = {latest}")
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return latest

    def own_event_store(self) -> EventStore:
        """The event log in this file, read through a connection of its own."""
        from stabilize.events.recorder import SqliteEventStore

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
            prefix = self.event_table_prefix()
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
                self.cache.put(wf)
        if tx.recorded:
            self.notify_committed(tx.recorded)

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


def upgrade_event_table(conn: sqlite3.Connection, schema: str = "main") -> None:
    """Bring an ``events`` table created by an older version to the current layout.

    Adds the ``last_sequence`` column, and replaces the ``events_by_time`` index by rowids
    that hold the time (see ``0003_events.sql``): each row's rowid becomes its timestamp
    times 65,536 plus its rank among the rows of that millisecond, and the index goes.
    Runs in a transaction of its own unless ``conn`` is already in one.
    """
    columns = {row[1] for row in conn.execute(f"PRAGMA {schema}.table_info(events)")}
    if not columns:
        return
    if "last_sequence" not in columns:
        conn.execute(f"ALTER TABLE {schema}.events ADD COLUMN last_sequence INTEGER")
    find_index = (
        f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'index' AND name = 'events_by_time'"
    )
    if conn.execute(find_index).fetchone() is None:
        return
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(find_index).fetchone() is not None:  # not done meanwhile
            rows = conn.execute(
                f"SELECT rowid, timestamp FROM {schema}.events ORDER BY timestamp, rowid"
            ).fetchall()
            renumbered, previous, rank = [], None, 0
            for rowid, timestamp in rows:
                rank = rank + 1 if timestamp == previous else 1
                previous = timestamp
                renumbered.append(((timestamp << EVENT_ROWID_TIME_SHIFT) + rank, rowid))
            # Old rowids count from 1, new ones start above 2**40: no two rows ever
            # share one while this runs.
            conn.executemany(f"UPDATE {schema}.events SET rowid = ? WHERE rowid = ?", renumbered)
            conn.execute(f"DROP INDEX {schema}.events_by_time")
        if own_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if own_transaction:
            conn.execute("ROLLBACK")
        raise


EVENT_ROWID_TIME_SHIFT = 16
"""A row of the SQLite event log has a rowid of at least ``timestamp << 16`` (see 0003)."""


def _statements(script: str) -> list[str]:
    """Split a migration into statements (our SQL has no semicolons inside literals)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
