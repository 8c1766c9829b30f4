"""Idle workers of one schema, waiting for a ``NOTIFY`` on its queue channel.

A message that nobody leased on insert sends a ``NOTIFY`` on the schema's channel at
commit; idle workers ``LISTEN`` on dedicated connections (kept for the next wait) and
wake at once, so the poll interval only covers a lost notification.

Every idle worker of every process receives every notification, but a commit that leaves
one message to claim has work for one of them. So a woken worker first *reserves* a
message on its listening connection (``reserve_for_wake_up``: one statement outside any
transaction that leases the first due message without a lease to the process's wake-up
owner for :data:`RESERVATION_MS`, skipping messages other transactions are claiming) and
returns to its processor only if it got one; the processor's claim then takes the
reservation (the ``claim`` query counts this process's reservations as unleased). The
others keep waiting: a wake-up that finds nothing costs one statement that writes
nothing, not a transaction and a commit (issue 19: with four workers, each submitted
workflow cost three empty claiming transactions).

Only messages without a lease are reserved. Whether a lease has ended is for the claimer
to judge by its own clock (a processor may run on an injected clock), so a waiter whose
wait a lease's end cut short returns without reserving, and its processor claims, adopting
the message if its clock agrees.

No wake-up is lost: each wait begins with a reservation attempt made once its ``LISTEN``
is in place, and every notification or delayed message falling due after that attempt
makes it try again; a lease's end makes it return. A reservation is a lease like any
other: one that its process does not claim (its processor stopped, the process died)
ends, and idle workers wake then and adopt it; a closing backend gives its reservations
back at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stabilize.backends.postgres._connection import TIMED_OUT, WOKEN, _Listener

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("stabilize.postgres")

RESERVATION_MS = 1000
"""How long a message reserved by a woken worker stays reserved for its process.

Its processor claims it at once (within a millisecond on a machine that is not
overloaded): the lease only bounds how long a reservation that nobody claims keeps the
message from the other workers.
"""

WAKE_OWNER_PREFIX = "~wake:"
"""How the lease owner of a reservation begins. Worker owners begin with their host name,
which never holds ``~``: recovery never takes a reservation for a dead worker's lease, and
a reservation shows as one in the queue's statistics."""


def wake_owner() -> str:
    """A new wake-up owner for this process: ``~wake:<host>:<pid>:<nonce>``."""
    return f"{WAKE_OWNER_PREFIX}{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"


class WorkWaiters:
    """The waiting workers of one backend, and their listening connections.

    Args:
        connect: Opens a new autocommit connection to the schema.
        channel: The schema's queue channel.
        reserve: The ``reserve_for_wake_up`` query.
        release: The ``release_wake_up_reservations`` query.
        owner: The lease owner of this process's reservations (see :func:`wake_owner`).
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        channel: str,
        reserve: str,
        release: str,
        owner: str,
    ) -> None:
        self._connect = connect
        self.channel = channel
        self._reserve = reserve
        self._release = release
        self.owner = owner
        self.idle: list[_Listener] = []
        """Listening connections no wait uses now (reused by the next one)."""
        self.waiting: set[_Listener] = set()
        """Listening connections a wait uses now."""
        self.closed = False
        self.reservations = 0
        """Messages reserved by waits of this backend so far (each was worth a claim)."""
        self.empty_wake_ups = 0
        """Reservation attempts after a notification or a due time that found nothing."""
        self._lock = threading.Lock()
        self._idle_wake = threading.Condition()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> None:
        """Wait up to ``timeout`` seconds until a message is reserved for this process.

        Returns early when a message was reserved (see the module's docstring): at once if
        one is claimable when the wait begins, else when a notification, a delayed message
        or an expiring lease brings one; or on :meth:`wake_all`. If the listening
        connection fails, this waits out the timeout (the next call reconnects).

        Args:
            timeout: The most seconds to wait.
            stop: Return at once when it is set, even if it was set just before this waiter
                could be woken (the processor's stop request); nothing is reserved then.
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
            self._wait(listener, deadline, stop)
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

    def _wait(self, listener: _Listener, deadline: float, stop: threading.Event | None) -> None:
        """Try to reserve, then wait for a reason to look again, until there is work."""
        looked = lease_ended = False
        while True:
            # Checked once this waiter can be woken: a stop requested before then has set
            # ``stop`` already; one requested after wakes the listener.
            if stop is not None and stop.is_set():
                return
            reserved, delivery, expiry = self._try_reserve(listener)
            now_ms = time.time() * 1000
            if reserved or (lease_ended and expiry is not None and expiry <= now_ms):
                # A lease this wait waited for ended and is still there: it is not
                # reserved here (whether it ended is for the claimer to judge, by its
                # clock), so the processor claims it.
                return
            if looked:
                self.empty_wake_ups += 1
            looked = True
            # Times already past are messages other transactions are claiming (skipped
            # above) or leases being adopted: their commits, or the poll, settle them.
            wait, lease_ends = deadline - time.monotonic(), False
            for due, is_lease in ((delivery, False), (expiry, True)):
                if due is not None and due > now_ms and (due - now_ms) / 1000 < wait:
                    wait, lease_ends = (due - now_ms) / 1000, is_lease
            if wait <= 0:
                return  # the deadline: the poll, the processor claims
            woke = listener.wait(wait)
            if woke == WOKEN or time.monotonic() >= deadline:
                return
            lease_ended = woke == TIMED_OUT and lease_ends

    def _try_reserve(self, listener: _Listener) -> tuple[bool, int | None, int | None]:
        """Reserve a due message that has no lease.

        Returns:
            Whether one was reserved, when the earliest message without a lease is
            delivered and when the earliest lease ends (epoch ms, None: no such message).
        """
        now = int(time.time() * 1000)
        params = (now, self.owner, now + RESERVATION_MS)
        row = listener.conn.execute(self._reserve, params).fetchone()
        if row is None:  # pragma: no cover - an aggregate always returns a row
            return False, None, None
        reserved = bool(row[0])
        if reserved:
            self.reservations += 1
        return reserved, row[1], row[2]

    def wake_all(self) -> None:
        """Make every running :meth:`wait` return now (e.g. on stop)."""
        with self._lock:
            for listener in self.waiting:
                listener.wake()
        with self._idle_wake:
            self._idle_wake.notify_all()

    def close(self) -> None:
        """Give back this process's reservations, wake every wait, close the connections.

        Waits close their own connections when they return.
        """
        with self._lock:
            self.closed = True
            idle = list(self.idle)
            self.idle.clear()
        self.wake_all()
        if self.reservations and idle:
            self._give_back(idle[0])
        for listener in idle:
            listener.close()

    def _give_back(self, listener: _Listener) -> None:
        import psycopg

        try:
            listener.conn.execute(self._release, (self.owner,))
        except psycopg.Error as exc:  # they expire by themselves
            log.debug("could not give back wake-up reservations: %s", exc)

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
            # The connection's only writes are reservations, which need not survive a
            # crash of the server (the message is claimable again): no wait for the flush.
            conn.execute("SET synchronous_commit TO off")
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
