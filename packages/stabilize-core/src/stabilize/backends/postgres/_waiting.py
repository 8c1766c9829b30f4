"""Idle workers of one schema, waiting for a ``NOTIFY`` on its queue channel.

A message that nobody leased on insert sends a ``NOTIFY`` on the schema's channel at
commit; idle workers ``LISTEN`` on dedicated connections (kept for the next wait) and
wake at once, so the poll interval only covers a lost notification.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stabilize.backends.postgres._connection import _Listener

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("stabilize.postgres")


class WorkWaiters:
    """The waiting workers of one backend, and their listening connections.

    Args:
        connect: Opens a new autocommit connection to the schema.
        channel: The schema's queue channel.
        next_due: The query of when the earliest message or lease falls due (epoch ms).
    """

    def __init__(
        self, connect: Callable[[], psycopg.Connection[Any]], channel: str, next_due: str
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._next_due = next_due
        self.idle: list[_Listener] = []
        """Listening connections no wait uses now (reused by the next one)."""
        self.waiting: set[_Listener] = set()
        """Listening connections a wait uses now."""
        self.closed = False
        self._lock = threading.Lock()
        self._idle_wake = threading.Condition()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Wait up to ``timeout`` seconds for a NOTIFY on the channel.

        Returns early when another worker enqueued a message, when a delayed message or
        an expiring lease falls due before the timeout, or on :meth:`wake_all`. If the
        listening connection fails, this waits out the timeout (the next call reconnects).

        Args:
            timeout: The most seconds to wait.
            stop: Return at once when it is set, even if it was set just before this waiter
                could be woken (the processor's stop request).
        """
        if timeout <= 0:
            return
        import psycopg

        deadline = time.monotonic() + timeout
        try:
            listener = self._take()
        except psycopg.Error as exc:
            log.debug("cannot listen for notifications: %s", exc)
            self._idle_wait(timeout)
            return
        try:
            # Checked once this waiter can be woken: a stop requested before then has set
            # ``stop`` already; one requested after wakes the listener.
            wait = 0.0 if stop is not None and stop.is_set() else timeout
            row = listener.conn.execute(self._next_due).fetchone()
            due = row[0] if row else None
            now_ms = time.time() * 1000
            if due is not None and due > now_ms:
                wait = min(wait, (due - now_ms) / 1000)
            listener.wait(wait)
        except (psycopg.Error, OSError) as exc:
            log.debug("listening connection failed: %s", exc)
            self._drop(listener)
            self._idle_wait(max(0.0, deadline - time.monotonic()))
            return
        with self._lock:
            self.waiting.discard(listener)
            if self.closed:
                listener.close()
            else:
                self.idle.append(listener)

    def wake_all(self) -> None:
        """Make every running :meth:`wait` return now (e.g. on stop)."""
        with self._lock:
            for listener in self.waiting:
                listener.wake()
        with self._idle_wake:
            self._idle_wake.notify_all()

    def close(self) -> None:
        """Wake every wait and close the listening connections (waits close their own)."""
        with self._lock:
            self.closed = True
            idle = list(self.idle)
            self.idle.clear()
        self.wake_all()
        for listener in idle:
            listener.close()

    def _idle_wait(self, timeout: float) -> None:
        with self._idle_wake:
            self._idle_wake.wait(timeout)

    def _take(self) -> _Listener:
        from psycopg import sql

        with self._lock:
            listener = self.idle.pop() if self.idle else None
            if listener is not None:
                self.waiting.add(listener)
                return listener
        conn = self._connect()
        try:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        listener = _Listener(conn)
        with self._lock:
            self.waiting.add(listener)
        return listener

    def _drop(self, listener: _Listener) -> None:
        with self._lock:
            self.waiting.discard(listener)
        listener.close()
