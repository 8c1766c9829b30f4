"""Wake the monitor when the database commits engine work, without rereading its tables.

- Commits and progress updates in this process: the in-process event bus.
- Commits of any process: the event store notices them
  (:func:`stabilize.events.follow_commits`: ``LISTEN/NOTIFY`` on PostgreSQL, the file's
  ``data_version`` on SQLite, looked at every ``interval`` seconds).
- An event store that cannot be watched: a poll of the source's cheap change marker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from stabilize.events import EventStore, can_follow, follow_commits, get_event_bus
from stabilize.models.event import Event

log = logging.getLogger(__name__)


class ChangeWatcher:
    """Calls ``wake`` from a thread of its own when something may have changed.

    Args:
        event_store: The database's event log (decides how commits are noticed).
        marker: A cheap query whose value changes with each commit (the fallback).
        wake: What to call; it must be safe to call from any thread.
        interval: Seconds between two checks when nothing notifies.
    """

    def __init__(
        self,
        event_store: EventStore,
        marker: Callable[[], Any],
        wake: Callable[[], None],
        interval: float,
    ) -> None:
        self.event_store = event_store
        self.marker = marker
        self.wake = wake
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unfollow: Callable[[], None] | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Subscribe to the event bus and start watching."""
        self._unsubscribe = get_event_bus().subscribe(self._on_event)
        if can_follow(self.event_store):
            self._unfollow = follow_commits(
                self.event_store, self.wake, interval=self.interval, name="monitor-watch"
            )
        else:
            self._thread = threading.Thread(target=self._poll, name="monitor-watch", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop watching (waits for the thread)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        unfollow, self._unfollow = self._unfollow, None
        if unfollow is not None:
            unfollow()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _on_event(self, event: Event) -> None:
        self.wake()

    def _poll(self) -> None:
        last = None
        while not self._stop.wait(self.interval):
            try:
                current = self.marker()
            except Exception:
                log.warning("cannot read the change marker", exc_info=True)
                continue
            if last is not None and current != last:
                self.wake()
            last = current
