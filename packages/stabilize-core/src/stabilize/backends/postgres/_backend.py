"""The PostgreSQL backend: one database schema holds workflows, stages, the queue and events.

Any number of worker processes on any number of machines share one schema; the database
is the only coordinator:

- a transition locks its workflow row (``SELECT ... FOR UPDATE``), so transitions of one
  workflow are serialised while different workflows proceed in parallel;
- workers claim messages with ``FOR UPDATE SKIP LOCKED``, so they never wait for each
  other and never claim the same message;
- a message that nobody leased on insert sends a ``NOTIFY`` on the schema's channel at
  commit; idle workers ``LISTEN`` on a dedicated connection and wake at once (the poll
  interval only covers a lost notification), and only a worker that reserved a message
  on waking goes on to claim it (see ``_waiting``);
- connections come from a ``psycopg_pool`` pool; a connection broken by a server restart is
  discarded and the pool reconnects in the background with exponential backoff.

The event log of a schema (:class:`PostgresEventStore`) shares the backend's pool.

psycopg is imported only when a backend is created: ``pip install "stabilize-core[postgres]"``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from stabilize.backends._base import Backend, CommitWatcher, EventStore, Transaction
from stabilize.backends._dialect import MigrationStatus
from stabilize.backends.postgres._arrays import register
from stabilize.backends.postgres._connection import (
    DEFAULT_SCHEMA,
    PoolOptions,
    _quiet_rollback,
    _release,
    check_schema_name,
    connect,
    connect_kwargs,
    describe,
    event_channel,
    notify_channel,
    pool_kwargs,
    require_psycopg,
    unreachable,
)
from stabilize.backends.postgres._cursor import _PipelinedCursor, _ReadCursor
from stabilize.backends.postgres._schema import _too_new, apply_migrations, read_migration_status
from stabilize.backends.postgres._transaction import PostgresTransaction
from stabilize.backends.postgres._waiting import WorkWaiters, wake_owner
from stabilize.backends.postgres._watch import EventListener
from stabilize.backends.sql import queries
from stabilize.errors import DatabaseNotFoundError, SchemaVersionError
from stabilize.events.log import select_events_params, unpack
from stabilize.events.recording import event_table_for, publish_committed
from stabilize.models.event import Event

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("stabilize.postgres")

MESSAGE_ID_BLOCK = 256
"""Queue message ids a process reserves from the sequence at a time."""


class PostgresBackend(Backend):
    """A PostgreSQL schema shared by every store and queue of this process that names it.

    Use :meth:`for_url`: it returns the one backend of a ``(url, schema)`` pair, so that a
    store and a queue on the same schema share a connection pool and transactions.

    Args:
        url: A ``postgresql://`` URL (or a libpq connection string).
        schema: The schema holding the tables (``None``: the connection's default,
            usually ``public``). Connections use ``search_path=<schema>``.
        options: Pool settings.
    """

    dialect = "postgres"
    placeholder = "%s"
    _instances: weakref.WeakValueDictionary[tuple[str, str | None], PostgresBackend] = (
        weakref.WeakValueDictionary()
    )
    _instances_lock = threading.Lock()

    @classmethod
    def for_url(
        cls,
        url: str,
        schema: str | None = None,
        options: PoolOptions | None = None,
        *,
        create_tables: bool = True,
    ) -> PostgresBackend:
        """Return the process-wide backend of ``(url, schema)``, opening it if needed.

        Args:
            url: The database URL.
            schema: The schema (``None``: the connection's default).
            options: Pool settings (used only when the backend is first opened).
            create_tables: Create the schema and apply pending migrations; otherwise the
                schema must already be at the current version.

        Raises:
            ConnectionError: the server cannot be reached (naming host and port).
            SchemaVersionError: the schema is newer than this stabilize, or older and
                ``create_tables`` is False.
            DatabaseNotFoundError: ``create_tables`` is False and the schema does not
                exist or holds no stabilize tables (a :class:`SchemaVersionError` too).
        """
        check_schema_name(schema)
        key = (url, schema)
        with cls._instances_lock:
            backend = cls._instances.get(key)
            created = backend is None or backend.closed
            if backend is None or backend.closed:
                try:
                    backend = cls(url, schema, options)
                except Exception as exc:
                    failure = unreachable(exc, url)
                    if failure is not None:
                        raise failure from exc
                    raise
                cls._instances[key] = backend
        try:
            backend.ensure_schema(create=create_tables)
        except BaseException as exc:
            if created:
                with cls._instances_lock:
                    if cls._instances.get(key) is backend:
                        del cls._instances[key]
                backend.close()
            failure = unreachable(exc, url)
            if failure is not None:
                raise failure from exc
            raise
        return backend

    @classmethod
    def open_instances(cls) -> list[PostgresBackend]:
        """The backends of this process that are not closed, oldest first."""
        with cls._instances_lock:
            return [b for b in cls._instances.values() if not b.closed]

    def __init__(self, url: str, schema: str | None = None, options: PoolOptions | None = None):
        require_psycopg()
        from psycopg_pool import ConnectionPool

        register()

        super().__init__()
        self.url = url
        self.schema = check_schema_name(schema)
        self.options = options or PoolOptions()
        self.channel = notify_channel(schema)
        self.connect_kwargs = connect_kwargs(schema, self.options.connect_kwargs)
        self.queries = {
            name: sql.replace("{channel}", self.channel)
            for name, sql in queries("postgres").items()
        }
        self.closed = False
        self._schema_ready = False
        self._resolved_schema: str | None = None
        self._schema_lock = threading.Lock()
        self.wake_owner = wake_owner()
        """The lease owner of the messages this process's idle workers reserve on waking."""
        self._waiters = WorkWaiters(
            lambda: self.connect(autocommit=True),
            self.channel,
            self.queries["reserve_for_wake_up"],
            self.queries["release_wake_up_reservations"],
            self.wake_owner,
        )
        self._message_ids: list[int] = []
        self._message_ids_lock = threading.Lock()
        # Fail fast with the server's own message (bad host, password, database) instead of
        # a pool timeout: open one connection first.
        self.connect().close()
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=self.options.min_size,
            max_size=self.options.max_size,
            kwargs=pool_kwargs(self.connect_kwargs),
            configure=self.options.configure,
            timeout=self.options.acquire_timeout or 30.0,
            name=f"stabilize[{schema or DEFAULT_SCHEMA}]",
            open=True,
        )
        # A backend nobody closed is released when its last store or queue goes away.
        self._finalizer = weakref.finalize(self, _release, self.pool, self._waiters.idle)

    def take_message_ids(self, count: int, reserve: Callable[[int], list[int]]) -> list[int]:
        """``count`` ids for new queue messages, from a block this process reserved.

        The ids come from the queue's sequence (``reserve(n)`` takes ``n`` more of it,
        :data:`MESSAGE_ID_BLOCK` at a time), so a transaction names the messages it inserts
        without waiting for the server to number them. Ids of a block this process does
        not use are never used.
        """
        with self._message_ids_lock:
            if len(self._message_ids) < count:
                self._message_ids += reserve(max(count - len(self._message_ids), MESSAGE_ID_BLOCK))
            taken = self._message_ids[:count]
            del self._message_ids[:count]
        return taken

    # -- connections ------------------------------------------------------------------

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """Open a new connection outside the pool (``search_path`` set to the schema)."""
        return connect(self.url, autocommit=autocommit, extra=self.connect_kwargs)

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        conn = self.pool.getconn()
        try:
            if not conn.autocommit:  # a ``configure`` hook turned it off
                conn.autocommit = True
            yield conn
        except psycopg.OperationalError:
            self.pool.putconn(conn)  # a broken connection is discarded, not reused
            self._check_pool()
            raise
        except BaseException:
            self.pool.putconn(conn)
            raise
        else:
            self.pool.putconn(conn)

    def _check_pool(self) -> None:
        """After a connection error, drop every idle connection that is broken too.

        Connections are not checked each time they are handed out (that costs a round
        trip per transaction, and the pool backs off for seconds per dead connection);
        after a server restart the first transaction fails, the caller retries (the
        processor does), and this sweep makes the retry find live connections.
        """
        try:
            self.pool.check()
        except Exception:  # pragma: no cover - the pool logs and reconnects by itself
            log.debug("pool check failed", exc_info=True)

    @property
    def location(self) -> str:
        """The database URL without its password, and the schema."""
        return describe(self.url, self.schema)

    # -- schema -----------------------------------------------------------------------

    def ensure_schema(self, *, create: bool) -> None:
        """Bring the schema to the current version (once per backend), or check it is.

        Raises:
            SchemaVersionError: the schema is newer than this stabilize, or older and
                ``create`` is False.
            DatabaseNotFoundError: ``create`` is False and the schema does not exist or
                holds no stabilize tables.
        """
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._is_ready():
                return
            with self.connect() as conn:
                status = read_migration_status(conn, self.location)
                if status.too_new:
                    raise _too_new(status)
                if status.pending:
                    if not create and status.current == 0:
                        raise self._not_found(conn)
                    if not create:
                        raise SchemaVersionError(
                            f"{self.location} is at schema version {status.current}, this "
                            f"stabilize needs {status.latest}: run 'stabilize mg-up' or pass "
                            "create_tables=True"
                        )
                    apply_migrations(conn, self.schema, self.location)
                row = conn.execute("SELECT current_schema()").fetchone()
                self._resolved_schema = str(row[0]) if row and row[0] else DEFAULT_SCHEMA
            self._schema_ready = True

    def _not_found(self, conn: psycopg.Connection[Any]) -> DatabaseNotFoundError:
        row = conn.execute("SELECT current_schema()").fetchone()
        conn.rollback()
        # current_schema() is NULL when no schema of the search_path exists.
        what = (
            f"schema {self.schema or DEFAULT_SCHEMA} does not exist"
            if not row or row[0] is None
            else "it holds no stabilize tables"
        )
        option = f" --schema {self.schema}" if self.schema else ""
        return DatabaseNotFoundError(
            f"no stabilize database in {self.location}: {what} "
            f"(run 'stabilize mg-up --db-url ...{option}' to create it)"
        )

    def _is_ready(self) -> bool:
        return self._schema_ready  # read again under the lock (another thread may have set it)

    def migrate(self) -> MigrationStatus:
        """Apply pending migrations; return the status before them.

        Raises:
            SchemaVersionError: the schema is newer than this stabilize.
        """
        with self.connect() as conn:
            before = apply_migrations(conn, self.schema, self.location)
        self._schema_ready = True
        return before

    def migration_status(self) -> MigrationStatus:
        """The schema's current and latest versions."""
        with self.connect() as conn:
            return read_migration_status(conn, self.location)

    @property
    def current_schema(self) -> str:
        """The schema the tables are in (resolved from ``search_path`` when none was given)."""
        return self.schema or self._resolved_schema or DEFAULT_SCHEMA

    # -- transactions -----------------------------------------------------------------

    def event_table_prefix(self) -> str | None:
        """Where this schema's transactions append events now (see ``event_table_for``)."""
        return event_table_for(self)

    def own_event_store(self) -> EventStore:
        """The event log in this schema."""
        return PostgresEventStore.of_backend(self)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction on a pooled connection (``READ COMMITTED``).

        Transitions lock their workflow row, and claims skip rows other workers locked,
        so several threads and processes can work in parallel.
        """
        with self._pooled() as conn:
            cur = conn.cursor()
            tx = PostgresTransaction(self, cur, self.queries, event_table=event_table_for(self))
            try:
                with conn.pipeline() as pipeline:
                    pipelined = _PipelinedCursor(cur, pipeline, self.queries, tx.write_statement())
                    tx.cur = pipelined
                    yield tx
                    tx.flush_events()
                    pipelined.commit()
            except BaseException:
                # Forget mutated workflows before the rollback releases their row locks:
                # a transaction waiting for one must not see this one's cached changes.
                for wf_id in tx.touched:
                    self.cache.evict(wf_id)
                _quiet_rollback(conn)
                raise
            finally:
                cur.close()
        for wf in tx.touched.values():
            self.cache.put(wf)
        self.committed_claimable(tx)
        if tx.recorded:
            publish_committed(tx.recorded)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A consistent read-only snapshot (``REPEATABLE READ READ ONLY``)."""
        with self._pooled() as conn:
            cur = conn.cursor()
            try:
                reading = _ReadCursor(cur, b"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield PostgresTransaction(
                    self, reading, self.queries, read_only=True, event_table=None
                )
            finally:
                cur.close()
                _quiet_rollback(conn)

    def is_transient_error(self, exc: BaseException) -> bool:
        """Serialisation failures, deadlocks and lost connections are worth retrying."""
        import psycopg

        return isinstance(
            exc,
            psycopg.errors.SerializationFailure
            | psycopg.errors.DeadlockDetected
            | psycopg.OperationalError,
        )

    # -- waiting for work -------------------------------------------------------------

    def wait_for_work(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Wait up to ``timeout`` seconds until there is a message for this process.

        Returns early once a due message without a lease is reserved for this process
        (the next claim of any of its processors takes it; see ``_waiting``): at once if
        there is one, else when a NOTIFY on this schema's channel or a delayed message
        falling due brings one. A notification that brings nothing for this process
        (another worker took the message) does not end the wait. Also returns when a
        lease ends (its message may be adopted) and on :meth:`wake_waiters`. If the
        listening connection fails, this waits out the timeout (the next call
        reconnects).

        Args:
            timeout: The most seconds to wait.
            stop: Return at once when it is set, even if it was set just before this waiter
                could be woken (the processor's stop request).
        """
        self._waiters.wait(timeout, stop)

    def wake_waiters(self) -> None:
        """Make every :meth:`wait_for_work` of this process return now (e.g. on stop)."""
        self._waiters.wake_all()

    def ping(self, timeout: float) -> bool:
        """True when a pooled connection answers ``SELECT 1`` within ``timeout`` seconds."""
        import psycopg

        try:
            with self.pool.connection(timeout=timeout) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def notify(self) -> None:
        """Wake every worker waiting on this schema (e.g. after inserting work by hand)."""
        with self._pooled() as conn:
            conn.execute("SELECT pg_notify(%s, '')", (self.channel,))

    def close(self) -> None:
        """Close the pool and the listening connections."""
        self._finalizer.detach()
        self.closed = True
        self._waiters.close()
        self.pool.close()


class PostgresEventStore:
    """The ``events`` table of a PostgreSQL schema.

    When the engine's store and queue use the same database, events are appended in the
    transaction of the transition that caused them: in the same schema directly, in
    another schema of that database by its qualified name. Events of an engine on another
    database (or on SQLite) are not recorded by this store.

    Args:
        connection_string: A ``postgresql://`` URL.
        schema: The schema holding the ``events`` table (``None``: the default).
        create_tables: Create the schema and apply pending migrations if needed.
        options: Pool settings, used when this store opens the schema first.
    """

    def __init__(
        self,
        connection_string: str,
        schema: str | None = None,
        create_tables: bool = True,
        options: PoolOptions | None = None,
    ) -> None:
        self.backend = PostgresBackend.for_url(
            connection_string, schema, options, create_tables=create_tables
        )
        self.connection_string = connection_string
        self.schema = schema

    @classmethod
    def of_backend(cls, backend: PostgresBackend) -> PostgresEventStore:
        """The log in the schema of an open backend (sharing its pool)."""
        store = cls.__new__(cls)
        store.backend = backend
        store.connection_string = backend.url
        store.schema = backend.schema
        return store

    def event_table_for(self, backend: Backend) -> str | None:
        """``""`` in this schema, ``"<schema>".`` in another schema of the same database."""
        if not isinstance(backend, PostgresBackend) or backend.url != self.backend.url:
            return None
        mine = self.backend.current_schema
        if backend is self.backend or backend.current_schema == mine:
            return ""
        return f'"{mine}".'

    def get_events(self, workflow_id: str, since: int = 0, limit: int | None = None) -> list[Event]:
        """Events of one workflow with ``sequence > since``, in order."""
        with self.backend.read() as tx:
            sql = tx.q["select_events" if limit is None else "select_events_limit"]
            tx.cur.execute(sql, select_events_params(workflow_id, since, limit))
            rows = tx.cur.fetchall()
        return unpack(rows, since, limit)

    def recent_heads(self, since_ms: int, application: str | None = None) -> dict[str, int]:
        """Workflows with events recorded at or after ``since_ms``, and the last sequence of each.

        Args:
            since_ms: Epoch milliseconds (the time the engine wrote with the transition).
            application: Only workflows of this application (from the ``workflows`` table
                of this schema).
        """
        params: tuple[Any, ...] = (since_ms,) if application is None else (since_ms, application)
        with self.backend.read() as tx:
            sql = tx.q["recent_heads" if application is None else "recent_heads_of_application"]
            tx.cur.execute(sql, params)
            rows = tx.cur.fetchall()
        return {str(wf): int(seq) for wf, seq in rows}

    @property
    def channel(self) -> str:
        """The NOTIFY channel of this log.

        Each commit that records events of a workflow sends its id there (a channel of its
        own: queue workers do not listen to it).
        """
        return event_channel(self.backend.current_schema)

    def watch(
        self, workflow_id: str | None = None, *, interval: float | None = None
    ) -> CommitWatcher:
        """A dedicated connection LISTENing on :attr:`channel` (close it when done).

        Args:
            workflow_id: Wake only for this workflow's events (``None``: any workflow).
            interval: Ignored: every commit that records events notifies the channel.
        """
        return self.listen(workflow_id)

    def listen(self, workflow_id: str | None = None) -> EventListener:
        """:meth:`watch`, typed as the listener it returns.

        Args:
            workflow_id: Wake only for this workflow's events (``None``: any workflow).
        """
        return EventListener(
            lambda: self.backend.connect(autocommit=True), self.channel, workflow_id
        )

    def count(self) -> int:
        """The number of events stored."""
        with self.backend.read() as tx:
            tx.cur.execute(tx.q["count_events"])
            return int(tx.cur.fetchone()[0])

    def close(self) -> None:
        """Nothing to release: the connection pool belongs to the shared backend."""
