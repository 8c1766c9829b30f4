"""The PostgreSQL backend: one database schema holds workflows, stages, the queue and events.

Any number of worker processes on any number of machines share one schema; the database
is the only coordinator:

- a transition locks its workflow row (``SELECT ... FOR UPDATE``), so transitions of one
  workflow are serialised while different workflows proceed in parallel;
- workers claim messages with ``FOR UPDATE SKIP LOCKED``, so they never wait for each
  other and never claim the same message;
- a message that nobody leased on insert sends a ``NOTIFY`` on the schema's channel at
  commit; idle workers ``LISTEN`` on a dedicated connection and wake at once (the poll
  interval only covers a lost notification);
- connections come from a ``psycopg_pool`` pool; a connection broken by a server restart is
  discarded and the pool reconnects in the background with exponential backoff.

psycopg is imported only when a backend is created: ``pip install "stabilize-core[postgres]"``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import re
import select
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from stabilize.backends._base import Backend, Cursor, Transaction, dumps
from stabilize.backends.migrate import MigrationStatus
from stabilize.backends.sql import migrations, queries
from stabilize.engine.messages import (
    CANCEL_WORKFLOW,
    RUN_TASK,
    STAGE_DEADLINE,
    START_WORKFLOW,
    ClaimedMessage,
    Message,
)
from stabilize.errors import SchemaVersionError
from stabilize.models.workflow import Workflow

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("stabilize.postgres")

INSTALL_HINT = 'PostgreSQL support needs psycopg: pip install "stabilize-core[postgres]"'
VERSION_TABLE = "stabilize_schema_version"
DEFAULT_SCHEMA = "public"
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def require_psycopg() -> None:
    """Import psycopg and psycopg_pool, or raise an ImportError saying how to install them."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"{INSTALL_HINT} ({exc})") from exc


def is_postgres_url(url: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    return url.startswith(("postgresql://", "postgres://"))


def check_schema_name(schema: str | None) -> str | None:
    """Return ``schema`` if it is a plain SQL identifier (letters, digits, ``_``).

    Raises:
        ValueError: the name needs quoting or is longer than PostgreSQL allows.
    """
    if schema is not None and not _SCHEMA_NAME.match(schema):
        raise ValueError(
            f"invalid schema name {schema!r}: use letters, digits and underscores "
            "(at most 63, not starting with a digit)"
        )
    return schema


def _short_name(prefix: str, name: str) -> str:
    """``prefix + name``, hashed down to a legal identifier when longer than 63 bytes."""
    full = f"{prefix}{name}"
    if len(full.encode()) <= 63:
        return full
    return f"{prefix}{hashlib.blake2b(name.encode(), digest_size=12).hexdigest()}"


def notify_channel(schema: str | None) -> str:
    """The NOTIFY channel of a schema (channels are database-wide, so derived from it)."""
    return _short_name("stabilize_", schema or DEFAULT_SCHEMA)


def advisory_key(schema: str | None) -> int:
    """The advisory-lock key that serialises migrations of a schema (a signed 64-bit int)."""
    digest = hashlib.blake2b(
        f"stabilize:migrate:{schema or DEFAULT_SCHEMA}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class PoolOptions:
    """Connection-pool settings of a PostgreSQL backend.

    Attributes:
        min_size: Connections kept open.
        max_size: Most connections opened at once.
        acquire_timeout: Seconds to wait for a free connection before failing
            (``None``: 30).
        connect_kwargs: Extra ``psycopg.connect`` keyword arguments (e.g. ``connect_timeout``).
        configure: Called with each new connection before it is used.
    """

    min_size: int = 1
    max_size: int = 10
    acquire_timeout: float | None = None
    connect_kwargs: Mapping[str, Any] | None = None
    configure: Callable[[psycopg.Connection[Any]], None] | None = None

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.max_size < 1 or self.min_size > self.max_size:
            raise ValueError(
                f"need 0 <= min_size <= max_size and max_size >= 1, got "
                f"min_size={self.min_size}, max_size={self.max_size}"
            )


def connect_kwargs(schema: str | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``psycopg.connect`` keyword arguments: ``extra`` plus ``search_path`` for the schema."""
    kwargs = dict(extra or {})
    if schema is not None:
        given = str(kwargs.get("options", ""))
        kwargs["options"] = f"{given} -csearch_path={check_schema_name(schema)}".strip()
    return kwargs


def connect(
    url: str,
    schema: str | None = None,
    *,
    autocommit: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> psycopg.Connection[Any]:
    """Open a connection whose ``search_path`` is ``schema`` (outside any pool)."""
    require_psycopg()
    import psycopg

    return psycopg.connect(url, autocommit=autocommit, **connect_kwargs(schema, extra))


def describe(url: str, schema: str | None) -> str:
    """The URL without its password, and the schema (for messages)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    where = f"schema {schema or DEFAULT_SCHEMA}"
    try:
        params = conninfo_to_dict(url)
    except Exception:
        return f"<PostgreSQL> ({where})"
    params.pop("password", None)
    return f"{make_conninfo('', **params)} ({where})"


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
            SchemaVersionError: the schema is newer than this stabilize, or older and
                ``create_tables`` is False.
        """
        check_schema_name(schema)
        key = (url, schema)
        with cls._instances_lock:
            backend = cls._instances.get(key)
            created = backend is None or backend.closed
            if backend is None or backend.closed:
                backend = cls(url, schema, options)
                cls._instances[key] = backend
        try:
            backend.ensure_schema(create=create_tables)
        except BaseException:
            if created:
                with cls._instances_lock:
                    if cls._instances.get(key) is backend:
                        del cls._instances[key]
                backend.close()
            raise
        return backend

    def __init__(self, url: str, schema: str | None = None, options: PoolOptions | None = None):
        require_psycopg()
        from psycopg_pool import ConnectionPool

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
        self._listeners: list[_Listener] = []
        self._waiting: set[_Listener] = set()
        self._listeners_lock = threading.Lock()
        self._idle = threading.Condition()
        # Fail fast with the server's own message (bad host, password, database) instead of
        # a pool timeout: open one connection first.
        self.connect().close()
        self.pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=self.options.min_size,
            max_size=self.options.max_size,
            kwargs=self.connect_kwargs,
            configure=self.options.configure,
            reset=_reset_connection,
            timeout=self.options.acquire_timeout or 30.0,
            name=f"stabilize[{schema or DEFAULT_SCHEMA}]",
            open=True,
        )
        # A backend nobody closed is released when its last store or queue goes away.
        self._finalizer = weakref.finalize(self, _release, self.pool, self._listeners)

    # -- connections ------------------------------------------------------------------

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection[Any]:
        """Open a new connection outside the pool (``search_path`` set to the schema)."""
        return connect(self.url, autocommit=autocommit, extra=self.connect_kwargs)

    @contextmanager
    def _pooled(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg

        conn = self.pool.getconn()
        try:
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
            SchemaVersionError: the schema is newer than this stabilize, or older (or
                missing) and ``create`` is False.
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
        """Where events go: ``""`` (this schema), ``"<schema>."`` (another one) or None."""
        from stabilize.events.recorder import current_event_store

        store = current_event_store()
        return None if store is None else store.event_table_for(self)

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """A write transaction on a pooled connection (``READ COMMITTED``).

        Transitions lock their workflow row, and claims skip rows other workers locked,
        so several threads and processes can work in parallel.
        """
        with self._pooled() as conn:
            cur = conn.cursor()
            tx = PostgresTransaction(self, cur, self.queries)
            try:
                with conn.pipeline() as pipeline:
                    pipelined = _PipelinedCursor(cur, pipeline, self.queries)
                    tx.cur = pipelined
                    yield tx
                    pipelined.flush()
                conn.commit()
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
        if tx.recorded:
            self.notify_committed(tx.recorded)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """A consistent read-only snapshot (``REPEATABLE READ READ ONLY``)."""
        with self._pooled() as conn:
            # Reset to the defaults by _reset_connection when the pool takes it back.
            conn.isolation_level = _repeatable_read()
            conn.read_only = True
            cur = conn.cursor()
            try:
                yield PostgresTransaction(self, cur, self.queries, read_only=True)
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

    def wait_for_work(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a NOTIFY on this schema's channel.

        Returns early when another worker enqueued a message, when a delayed message or
        an expiring lease falls due before the timeout, or on :meth:`wake_waiters`. If the
        listening connection fails, this waits out the timeout (the next call reconnects).
        """
        if timeout <= 0:
            return
        import psycopg

        deadline = time.monotonic() + timeout
        try:
            listener = self._take_listener()
        except psycopg.Error as exc:
            log.debug("cannot listen for notifications: %s", exc)
            self._idle_wait(timeout)
            return
        try:
            wait = timeout
            row = listener.conn.execute(self.queries["next_due"]).fetchone()
            due = row[0] if row else None
            now_ms = time.time() * 1000
            if due is not None and due > now_ms:
                wait = min(wait, (due - now_ms) / 1000)
            listener.wait(wait)
        except (psycopg.Error, OSError) as exc:
            log.debug("listening connection failed: %s", exc)
            self._drop_listener(listener)
            self._idle_wait(max(0.0, deadline - time.monotonic()))
            return
        with self._listeners_lock:
            self._waiting.discard(listener)
            if self.closed:
                listener.close()
            else:
                self._listeners.append(listener)

    def wake_waiters(self) -> None:
        """Make every :meth:`wait_for_work` of this process return now (e.g. on stop)."""
        with self._listeners_lock:
            for listener in self._waiting:
                listener.wake()
        with self._idle:
            self._idle.notify_all()

    def _idle_wait(self, timeout: float) -> None:
        with self._idle:
            self._idle.wait(timeout)

    def _take_listener(self) -> _Listener:
        from psycopg import sql

        with self._listeners_lock:
            listener = self._listeners.pop() if self._listeners else None
            if listener is not None:
                self._waiting.add(listener)
                return listener
        conn = self.connect(autocommit=True)
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        listener = _Listener(conn)
        with self._listeners_lock:
            self._waiting.add(listener)
        return listener

    def _drop_listener(self, listener: _Listener) -> None:
        with self._listeners_lock:
            self._waiting.discard(listener)
        listener.close()

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
            conn.commit()

    def close(self) -> None:
        """Close the pool and the listening connections."""
        self._finalizer.detach()
        with self._listeners_lock:
            self.closed = True
            listeners = list(self._listeners)
            self._listeners.clear()
        self.wake_waiters()
        for listener in listeners:
            listener.close()
        self.pool.close()


class _PipelinedCursor:
    """A cursor of a connection in pipeline mode, for :class:`Transaction`.

    Statements are sent without waiting for their results; reading a result (``fetchone``,
    ``fetchall``, ``rowcount``) sends what is queued and waits for it. A transaction so
    waits for the server only where it needs an answer (a version to check, an id, a lease
    that still holds) instead of after every statement.

    The row updates of one transition (``update_stage`` for its changed stages, then
    ``update_workflow`` or ``bump_workflow``) are *deferred*: they go out as ``WITH``
    clauses of the statement that inserts the messages the transition produced
    (:meth:`execute_absorbing`), or as one statement of their own before any other
    statement and at the end of the transaction. So they run in the order they were issued
    relative to every other statement, and one statement never changes a row twice.
    """

    def __init__(
        self, cur: psycopg.Cursor[Any], pipeline: psycopg.Pipeline, queries: dict[str, str]
    ) -> None:
        self._cur = cur
        self._pipeline = pipeline
        self._update_stage = queries["update_stage"]
        self._workflow_writes = (queries["update_workflow"], queries["bump_workflow"])
        self._deferred: list[tuple[str, Sequence[Any]]] = []
        self._workflow_deferred = False

    def flush(self) -> None:
        """Send the deferred writes (as one statement)."""
        if not self._deferred:
            return
        *head, (last_sql, last_params) = self._deferred
        self._deferred = []
        self._workflow_deferred = False
        if not head:
            self._cur.execute(last_sql, last_params)
            return
        sql = _with_clauses(tuple(h for h, _ in head), last_sql)
        self._cur.execute(sql, [p for _, params in head for p in params] + list(last_params))

    def execute_absorbing(self, sql: str, params: Sequence[Any]) -> Any:
        """Run ``sql`` (a ``WITH`` statement) with the deferred writes as leading clauses.

        Only for statements that do not touch the deferred rows (stages and workflows):
        data-modifying ``WITH`` clauses run once, to completion, on the statement's
        snapshot, which the main statement therefore must not need to see.
        """
        if not self._deferred:
            return self._cur.execute(sql, params)
        deferred, self._deferred = self._deferred, []
        self._workflow_deferred = False
        merged = _with_clauses(tuple(d for d, _ in deferred), sql)
        return self._cur.execute(merged, [p for _, ps in deferred for p in ps] + list(params))

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Any:
        if sql in self._workflow_writes and not self._workflow_deferred:
            self._deferred.append((sql, params))  # closes this transition's group
            self._workflow_deferred = True
            return None
        self.flush()
        return self._cur.execute(sql, params)

    def executemany(self, sql: str, params: Iterable[Sequence[Any]], /) -> Any:
        self.flush()
        if sql == self._update_stage:
            rows = list(params)
            if rows:
                # Opens a transition's group: (status, body, id) rows, one statement.
                values = [v for status, body, stage_id in rows for v in (stage_id, status, body)]
                self._deferred.append((_stage_updates(len(rows)), values))
            return None
        return self._cur.executemany(sql, params)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        self.flush()
        self._pipeline.sync()
        return self._cur.rowcount


@functools.lru_cache(maxsize=256)
def _with_clauses(writes: tuple[str, ...], statement: str) -> str:
    """``statement`` preceded by ``writes`` as data-modifying ``WITH`` clauses."""
    clauses = ", ".join(f"deferred_{i} AS ({_uncommented(w)})" for i, w in enumerate(writes))
    statement = _uncommented(statement)
    if statement.startswith("WITH "):
        return f"WITH {clauses}, {statement[len('WITH ') :]}"
    return f"WITH {clauses} {statement}"


# Messages whose acknowledgement the processor follows with a transition of their workflow:
# acknowledging one also locks the workflow row and reads its version (one statement).
_TRANSITION_KINDS = frozenset({RUN_TASK, START_WORKFLOW, STAGE_DEADLINE, CANCEL_WORKFLOW})
_NOT_READ = object()


class PostgresTransaction(Transaction):
    """A :class:`Transaction` that spends fewer statements and round trips per transition.

    Same reads and writes as the shared implementation, in fewer statements:

    - a claim selects and leases in one statement;
    - acknowledging a message that a transition of its workflow follows (RunTask,
      StartWorkflow, StageDeadline, CancelWorkflow) also locks the workflow row and reads its
      version in the same statement; :meth:`workflow` then uses that version instead of
      locking the row again;
    - the messages of one :meth:`enqueue` are one statement, not waited for unless one is
      leased to the caller; in a write transaction it also carries the row updates of the
      transition that produced them (deferred by the cursor, see :class:`_PipelinedCursor`),
      so :meth:`Transaction.save` and the enqueue that follows it are one statement;
    - lease renewals are one statement.
    """

    def __init__(
        self,
        backend: Backend,
        cur: Cursor,
        queries: dict[str, str],
        *,
        read_only: bool = False,
    ) -> None:
        super().__init__(backend, cur, queries, read_only=read_only)
        self._versions: dict[str, Any] = {}
        """Versions read (and rows locked) by :meth:`ack`, for the next :meth:`workflow`."""

    # -- workflows ---------------------------------------------------------------------

    def workflow(self, workflow_id: str) -> Workflow | None:
        """Load a workflow for a transition; see :meth:`Transaction.workflow`."""
        version = self._versions.pop(workflow_id, _NOT_READ)
        if version is _NOT_READ or workflow_id in self.touched or self.read_only:
            return super().workflow(workflow_id)
        if version is None:
            return None
        cached = self.backend.cache.get(workflow_id)
        if cached is None or cached.version != version:
            cached = self.read_workflow(workflow_id)
            if cached is None:  # pragma: no cover - deleted between two reads of one txn
                return None
        self.touched[workflow_id] = cached
        return cached

    # -- queue -------------------------------------------------------------------------

    def enqueue(
        self,
        messages: Sequence[Message],
        now: int,
        *,
        lease_owner: str | None = None,
        lease_until: int | None = None,
        lease_limit: int = 0,
    ) -> list[ClaimedMessage]:
        """Insert messages; up to ``lease_limit`` due ones are inserted leased to the owner."""
        if not messages:
            return []
        params: list[Any] = []
        leased: list[bool] = []
        for m in messages:
            lease = lease_owner is not None and m.delay_ms <= 0 and sum(leased) < lease_limit
            leased.append(lease)
            params += (
                m.workflow_id,
                m.kind,
                m.stage_id,
                m.task_id,
                dumps(m.payload),
                now + max(0, m.delay_ms),
                1 if lease else 0,
                lease_owner if lease else None,
                1 if lease else 0,
                lease_until if lease else None,
                now,
            )
        sql = _enqueue_rows(self.q["enqueue"], len(messages))
        if isinstance(self.cur, _PipelinedCursor):
            # The writes of the transition that produced these messages go with them.
            self.cur.execute_absorbing(sql, params)
        else:
            self.cur.execute(sql, params)
        if not any(leased):
            return []  # nothing to read back: the statement is not waited for
        # Ids come from the sequence in the order of the rows, so ascending ids map back
        # onto the messages in order.
        ids = sorted(int(r[0]) for r in self.cur.fetchall())
        return [
            ClaimedMessage(msg_id, m.kind, m.workflow_id, m.stage_id, m.task_id, m.payload, 1, 1)
            for msg_id, m, lease in zip(ids, messages, leased, strict=True)
            if lease
        ]

    def claim(self, owner: str, now: int, lease_until: int, limit: int) -> list[ClaimedMessage]:
        """Lease up to ``limit`` due messages whose lease is free or expired (one statement)."""
        if limit <= 0:
            return []
        self.cur.execute(self.q["claim"], (now, now, limit, owner, lease_until))
        rows = sorted(self.cur.fetchall(), key=lambda r: (r[8], r[0]))
        return [
            ClaimedMessage(r[0], r[2], r[1], r[3], r[4], json.loads(r[5]), r[6], r[7]) for r in rows
        ]

    def ack(self, msg: ClaimedMessage, owner: str) -> bool:
        """Delete a claimed message if this owner still holds its lease (the fence)."""
        if msg.kind in _TRANSITION_KINDS and msg.workflow_id not in self.touched:
            self.cur.execute(self.q["ack_and_lock"], (msg.id, msg.lease_token, owner))
            row = self.cur.fetchone()
            if row is None:
                return False
            self._versions[msg.workflow_id] = row[0]
            return True
        self.cur.execute(self.q["ack"], (msg.id, msg.lease_token, owner))
        return self.cur.fetchone() is not None

    def extend_leases(
        self, owner: str, leases: Iterable[tuple[int, int]], lease_until: int
    ) -> list[int]:
        """Extend the leases ``(id, token)`` this owner holds; return ids no longer held."""
        wanted = list(leases)
        if not wanted:
            return []
        self.cur.execute(
            self.q["extend_leases"],
            (lease_until, [i for i, _ in wanted], [t for _, t in wanted], owner),
        )
        held = {int(r[0]) for r in self.cur.fetchall()}
        return [msg_id for msg_id, _ in wanted if msg_id not in held]


def _uncommented(sql: str) -> str:
    """``sql`` without its ``--`` comment lines."""
    return "\n".join(ln for ln in sql.splitlines() if not ln.lstrip().startswith("--")).strip()


@functools.lru_cache(maxsize=64)
def _stage_updates(count: int) -> str:
    """An update of ``count`` stage rows, parameters ``(id, status, body)`` per row."""
    rows = ", ".join(["(%s, %s, %s)"] * count)
    return (
        "UPDATE stages SET status = v.status, body = v.body "
        f"FROM (VALUES {rows}) AS v (id, status, body) WHERE stages.id = v.id"
    )


@functools.lru_cache(maxsize=64)
def _enqueue_rows(enqueue_sql: str, count: int) -> str:
    """The ``enqueue`` statement with ``count`` rows of values instead of one."""
    if count == 1:
        return enqueue_sql
    row = "(" + ", ".join(["%s"] * 11) + ")"
    single = f"VALUES {row}"
    if single not in enqueue_sql:  # pragma: no cover - guards an edit of queries.sql
        raise RuntimeError("the enqueue query must insert one VALUES row of 11 parameters")
    return enqueue_sql.replace(single, "VALUES " + ", ".join([row] * count))


def _release(pool: ConnectionPool[Any], listeners: list[_Listener]) -> None:
    """Close what a garbage-collected backend left open.

    The pool is closed from a thread of its own: the collection may run in one of the
    pool's worker threads, which cannot join themselves.
    """
    for listener in list(listeners):
        listener.close()
    try:
        threading.Thread(target=pool.close, name="stabilize-pool-close", daemon=True).start()
    except RuntimeError:  # interpreter shutdown: no new threads
        pool.close()


class _Listener:
    """A connection that LISTENs on the channel, and a socket pair to interrupt its wait."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wait(self, timeout: float) -> None:
        """Return on a notification, on :meth:`wake`, or after ``timeout`` seconds."""
        # Notifications received while another statement ran are already buffered.
        if sum(1 for _ in self.conn.notifies(timeout=0)):
            return
        if timeout > 0:
            wake_fd = self._wake_r.fileno()
            ready, _, _ = select.select([self.conn.fileno(), wake_fd], [], [], timeout)
            if wake_fd in ready:
                with contextlib.suppress(BlockingIOError):
                    self._wake_r.recv(4096)
        for _ in self.conn.notifies(timeout=0):  # consume what arrived
            pass

    def wake(self) -> None:
        """Interrupt :meth:`wait` (now, or the next one if none runs)."""
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        """Close the connection and the socket pair."""
        self.conn.close()
        self._wake_r.close()
        self._wake_w.close()


def read_migration_status(conn: psycopg.Connection[Any], where: str) -> MigrationStatus:
    """Read the schema version through ``conn`` (whose ``search_path`` names the schema)."""
    latest = migrations("postgres")[-1][0]
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,)).fetchone()
    current = 0
    if row and row[0]:
        found = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
        current = int(found[0]) if found else 0
    conn.rollback()
    return MigrationStatus(where, current, latest)


def apply_migrations(
    conn: psycopg.Connection[Any], schema: str | None, where: str
) -> MigrationStatus:
    """Create the schema if needed and apply pending migrations in one transaction.

    The transaction holds an advisory lock derived from the schema name, so workers that
    start at once apply each migration exactly once. Returns the status found before.

    Raises:
        SchemaVersionError: the schema is newer than this stabilize.
    """
    from psycopg import sql

    known = migrations("postgres")
    latest = known[-1][0]
    conn.rollback()
    try:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (advisory_key(schema),))
        if schema is not None:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} ("
            "version INTEGER PRIMARY KEY, "
            "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        row = conn.execute(f"SELECT coalesce(max(version), 0) FROM {VERSION_TABLE}").fetchone()
        current = int(row[0]) if row else 0
        status = MigrationStatus(where, current, latest)
        if status.too_new:
            raise _too_new(status)
        for version, script in known:
            if version > current:
                conn.execute(script)
                conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES (%s)", (version,))
        conn.commit()
    except BaseException:
        _quiet_rollback(conn)
        raise
    return status


def _too_new(status: MigrationStatus) -> SchemaVersionError:
    return SchemaVersionError(
        f"{status.location} has schema version {status.current}, but this stabilize knows "
        f"only up to {status.latest}: upgrade stabilize-core to use it"
    )


def _reset_connection(conn: psycopg.Connection[Any]) -> None:
    """Undo what :meth:`PostgresBackend.read` set before a connection is reused."""
    conn.isolation_level = None
    conn.read_only = None


def _repeatable_read() -> Any:
    from psycopg import IsolationLevel

    return IsolationLevel.REPEATABLE_READ


def _quiet_rollback(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    if conn.closed:
        return
    try:
        conn.rollback()
    except psycopg.Error:  # the connection broke; the pool discards it
        log.debug("rollback failed", exc_info=True)
