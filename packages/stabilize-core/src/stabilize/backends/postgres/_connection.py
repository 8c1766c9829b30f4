"""Connecting to PostgreSQL: URLs, schema and channel names, pool settings, LISTEN connections.

psycopg is imported only when a connection is opened: ``pip install "stabilize-core[postgres]"``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("stabilize.postgres")

INSTALL_HINT = 'PostgreSQL support needs psycopg: pip install "stabilize-core[postgres]"'
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


def event_channel(schema: str | None) -> str:
    """The NOTIFY channel of the events recorded in a schema (one per workflow and commit).

    Separate from :func:`notify_channel`, so that recorded events do not wake idle queue
    workers; the ``.`` (never part of a schema name) keeps the two apart.
    """
    return _short_name("stabilize_events.", schema or DEFAULT_SCHEMA)


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
        given = str(kwargs.get("options") or "")
        kwargs["options"] = f"{given} -csearch_path={check_schema_name(schema)}".strip()
    return kwargs


GENERIC_PLANS = "-cplan_cache_mode=force_generic_plan"
"""The session setting of pooled connections: a prepared statement is planned once."""


def pool_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The ``psycopg.connect`` keyword arguments of pooled connections: ``kwargs`` and more.

    - ``autocommit``: transactions send their own ``BEGIN`` and ``COMMIT`` (see
      :class:`~stabilize.backends.postgres._cursor._PipelinedCursor`);
    - ``prepare_threshold=0``: the engine's statements are few and run again and again,
      so each is prepared on a connection the first time it runs there (psycopg's
      default waits for the sixth);
    - ``plan_cache_mode=force_generic_plan``: a prepared statement is planned once per
      connection. The engine's statements take ids, times and arrays, and their best plan
      does not depend on the values; the server otherwise plans each of the first five
      runs anew, and keeps doing so for the claim, whose custom plans it estimates
      cheaper (0.2 ms of planning per claim, against 35 µs to run it).

    ``prepare_threshold`` and a ``plan_cache_mode`` in ``options`` given by the caller win.
    """
    out = {**kwargs, "autocommit": True}
    out.setdefault("prepare_threshold", 0)
    out["options"] = f"{GENERIC_PLANS} {out.get('options') or ''}".strip()
    return out


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


def server_address(url: str) -> str:
    """The ``host:port`` a URL connects to, libpq's defaults filled in (for messages)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(url)
    except Exception:
        params = {}
    host = str(params.get("host") or os.environ.get("PGHOST") or "localhost")
    port = str(params.get("port") or os.environ.get("PGPORT") or "5432")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_connection_failure(exc: BaseException) -> bool:
    """True when ``exc`` says that connecting to the server failed."""
    psycopg = sys.modules.get("psycopg")
    if psycopg is None or not isinstance(exc, psycopg.OperationalError):
        return False
    # Also raised when a server goes away mid-statement; only a failed connect says so.
    return str(exc).lower().startswith(("connection failed", "connection to server"))


def describe_connection_failure(exc: BaseException, url: str) -> str | None:
    """One line naming the server ``url`` connects to and why connecting failed, or None.

    psycopg's own message spans lines and names the address only in passing (issue 15).
    None when ``exc`` is not a failure to connect.
    """
    if not is_connection_failure(exc):
        return None
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = first.rsplit("failed: ", 1)[-1].strip()
    return " ".join(f"cannot connect to PostgreSQL at {server_address(url)}: {reason}".split())


def unreachable(exc: BaseException, url: str) -> ConnectionError | None:
    """A ConnectionError naming the server, when ``exc`` says it could not be reached."""
    described = describe_connection_failure(exc, url)
    if described is None:
        return None
    return ConnectionError(
        f"{described} (check that the server is running and accepts connections there, "
        "and the host and port in the URL)"
    )


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


RECHECK_S = 0.5
"""Longest a listener waits on its socket before it looks at the driver's buffer again."""

NOTIFIED = "notified"
""":meth:`_Listener.wait` returned on a notification."""
WOKEN = "woken"
""":meth:`_Listener.wait` returned on :meth:`_Listener.wake`."""
TIMED_OUT = "timed out"
""":meth:`_Listener.wait` returned after its timeout."""


class _Listener:
    """A connection that LISTENs on the channel, and a socket pair to interrupt its wait."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wait(self, timeout: float) -> str:
        """Return on a notification, on :meth:`wake`, or after ``timeout`` seconds.

        Returns:
            Why it returned: :data:`NOTIFIED` (the notifications that came are consumed),
            :data:`WOKEN` or :data:`TIMED_OUT`.
        """
        deadline = time.monotonic() + timeout
        while True:
            # Notifications received while another statement ran are already buffered.
            if sum(1 for _ in self.conn.notifies(timeout=0)):
                return NOTIFIED
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMED_OUT
            data, woken = self.select(min(remaining, RECHECK_S))
            if woken:
                return WOKEN
            if data:
                # Counted as a notification even when it is something else (a parameter
                # status, a closed connection): the caller's next statement finds out.
                for _ in self.conn.notifies(timeout=0):  # consume what arrived
                    pass
                return NOTIFIED

    def select(self, timeout: float) -> tuple[bool, bool]:
        """Wait for data on the connection or a :meth:`wake`: ``(data came, woken)``.

        A notification that the driver read off the socket just before this call sits in
        its buffer, not on the socket: callers wait in slices of at most ``RECHECK_S`` and
        look at that buffer between them, so such a notification is late, never lost.
        """
        wake_fd = self._wake_r.fileno()
        ready, _, _ = select.select([self.conn.fileno(), wake_fd], [], [], timeout)
        woken = wake_fd in ready
        if woken:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        return self.conn.fileno() in ready, woken

    def wake(self) -> None:
        """Interrupt :meth:`wait` (now, or the next one if none runs)."""
        with contextlib.suppress(BlockingIOError):
            self._wake_w.send(b"x")

    def close(self) -> None:
        """Close the connection and the socket pair."""
        self.conn.close()
        self._wake_r.close()
        self._wake_w.close()


def _quiet_rollback(conn: psycopg.Connection[Any]) -> None:
    import psycopg

    if conn.closed:
        return
    try:
        conn.rollback()
    except psycopg.Error:  # the connection broke; the pool discards it
        log.debug("rollback failed", exc_info=True)
