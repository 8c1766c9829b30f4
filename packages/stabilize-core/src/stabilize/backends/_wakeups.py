"""Waking this process's idle workers of one database when claimable work was committed.

A worker with nothing to do waits in ``Backend.wait_for_work``. A commit in this process
that enqueued a message any worker may claim now wakes the waiters at once, instead of
leaving the work until their next poll (issue 19: a worker run as a service, fed from
the same process, took a whole poll interval to start each workflow). Commits of other
processes are seen at the next poll, or through the dialect's own means (PostgreSQL
``LISTEN``).
"""

from __future__ import annotations

import threading


class LocalWakeups:
    """A wake-up counter that idle workers of one database wait on.

    Each waiting thread remembers the count it last saw, so a wake that comes while it is
    busy (between two waits) is not lost: its next wait returns at once.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._count = 0
        self._seen = threading.local()

    def wake(self) -> None:
        """Make every current wait return, and the next wait of every other thread."""
        with self._cond:
            self._count += 1
            self._cond.notify_all()

    def wait(self, timeout: float, stop: threading.Event | None = None) -> bool:
        """Wait until a wake, ``stop`` or ``timeout`` seconds; True if woken.

        Args:
            timeout: The most seconds to wait.
            stop: Return at once when it is set (whoever sets it calls :meth:`wake`).
        """
        with self._cond:
            seen = getattr(self._seen, "count", None)
            woken = seen != self._count
            if not woken and not (stop is not None and stop.is_set()):
                woken = self._cond.wait_for(lambda: self._count != seen, timeout)
            self._seen.count = self._count
            return woken
