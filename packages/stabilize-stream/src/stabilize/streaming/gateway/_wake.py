"""What wakes the feed before its next poll: any commit to the log's database.

The event store notices commits of every process (:func:`stabilize.events.follow_commits`:
``LISTEN/NOTIFY`` on PostgreSQL, the file's ``data_version`` on SQLite) and of this
process at once; the feed then reads the log. It polls anyway, so a lost wake-up only
delays events by one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable

from stabilize.events import EventStore, can_follow, follow_commits


class Wakers:
    """Call ``wake`` (on the event loop) when events may have been committed.

    Bursts are coalesced: at most one wake-up is scheduled at a time.

    Args:
        source: The event store.
        wake: What to call, on ``loop``.
        loop: The gateway's event loop.
    """

    def __init__(
        self, source: EventStore, wake: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.source = source
        self._wake = wake
        self._loop = loop
        self._pending = False
        self._lock = threading.Lock()
        self._stop: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """True when commits wake the feed (the store can be watched)."""
        return can_follow(self.source)

    def start(self) -> None:
        """Start following the store's commits (nothing to do for a store that cannot)."""
        if self.listening:
            self._stop = follow_commits(self.source, self._fire, name="gateway-watch")

    def close(self) -> None:
        """Stop following (waits for the thread)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def _fire(self) -> None:
        """Schedule one wake-up on the loop (from any thread)."""
        with self._lock:
            if self._pending:
                return
            self._pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
            self._loop.call_soon_threadsafe(self._run_wake)

    def _run_wake(self) -> None:
        with self._lock:
            self._pending = False
        self._wake()
