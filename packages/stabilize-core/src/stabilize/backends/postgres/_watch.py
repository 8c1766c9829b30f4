"""Noticing commits that record events in PostgreSQL: ``LISTEN`` on the log's channel.

Each commit that records events sends ``NOTIFY`` on the channel of the schema holding the
log, with the id of each workflow it recorded events for (see ``write_statement``).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stabilize.backends._watch import Watcher
from stabilize.backends.postgres._connection import RECHECK_S

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("stabilize.postgres")

RETRY_S = 1.0
"""Seconds between two attempts to listen again after the connection failed."""


class EventListener(Watcher):
    """A connection LISTENing for recorded events (from :meth:`PostgresEventStore.watch`).

    ``LISTEN`` runs when the listener is made, so a commit made after that is noticed
    even before the first :meth:`wait`. A notification that is lost (the connection broke,
    or it was sent before ``LISTEN``) is not sent again: when the connection breaks, the
    listener listens again on the next :meth:`wait`, which then returns True, and returns
    True every :data:`RETRY_S` seconds while it cannot (readers should look then).

    Args:
        connect: Opens a new autocommit connection to the log's database.
        channel: The log's NOTIFY channel.
        workflow_id: Wake only for this workflow's events (``None``: any workflow).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channel: str,
        workflow_id: str | None = None,
    ) -> None:
        # Before the bus may call _interrupt (from Watcher.__init__ on).
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(workflow_id)
        self.channel = channel
        self._connect = connect
        self._failing = False
        self.conn: psycopg.Connection[Any] | None = None
        """The listening connection (None while it cannot be opened)."""
        self._listen()

    def wait_for_events(self, timeout: float) -> bool:
        """Same as :meth:`wait` (the name this method had before ``watch`` existed)."""
        return self.wait(timeout)

    def _wait(self, timeout: float) -> bool:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            if self._take_committed():
                return True
            conn = self.conn
            remaining = deadline - time.monotonic()
            if conn is None:
                if self._listen():
                    return True  # commits made while not listening were not notified
                return not self._select(None, min(RETRY_S, max(0.0, remaining)))[1] or (
                    self._take_committed()
                )
            try:
                if self._relevant(conn):
                    return True
                if remaining <= 0:
                    return False
                _, woken = self._select(conn, min(remaining, RECHECK_S))
                if woken:
                    return self._take_committed() or self._relevant(conn)
            except (psycopg.Error, OSError):
                self._broken()
                self._listen()  # at once: the gap this True reports ends here if it works
                return True

    def _listen(self) -> bool:
        """Open the connection and ``LISTEN``; True when it worked."""
        import psycopg
        from psycopg import sql

        try:
            conn = self._connect()
        except (psycopg.Error, OSError):
            self._broken()
            return False
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except (psycopg.Error, OSError):
            conn.close()
            self._broken()
            return False
        with self._lock:
            if self._closed:  # closed meanwhile, by another thread
                conn.close()
                return False
            self.conn = conn
        self._failing = False
        return True

    def _relevant(self, conn: psycopg.Connection[Any]) -> bool:
        """Consume the buffered notifications; True if one is about our workflow."""
        payloads = [n.payload for n in conn.notifies(timeout=0)]
        if self.workflow_id is None:
            return bool(payloads)
        return self.workflow_id in payloads

    def _select(self, conn: psycopg.Connection[Any] | None, timeout: float) -> tuple[bool, bool]:
        """Wait for data on the connection or an interruption: ``(data came, woken)``.

        A notification that the driver read off the socket just before this call sits in
        its buffer, not on the socket: callers wait in slices of at most ``RECHECK_S`` and
        look at that buffer between them, so such a notification is late, never lost.
        """
        wake_fd = self._wake_r.fileno()
        watched = [wake_fd] if conn is None else [conn.fileno(), wake_fd]
        ready, _, _ = select.select(watched, [], [], timeout)
        woken = wake_fd in ready
        if woken:
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)
        return conn is not None and conn.fileno() in ready, woken

    def _broken(self) -> None:
        """Forget the connection after an error (logged once per run of failures)."""
        if not self._failing:
            log.warning("cannot LISTEN on %s; readers poll", self.channel, exc_info=True)
        self._failing = True
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _interrupt(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        self._wake_r.close()
        self._wake_w.close()
