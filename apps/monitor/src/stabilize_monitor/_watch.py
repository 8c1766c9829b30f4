"""Wake the monitor when the database commits engine work, without rereading its tables.

- Commits and progress updates in this process: the in-process event bus.
- Commits of any process on PostgreSQL: a ``LISTEN`` connection on the event log's channel
  (:meth:`stabilize.events.PostgresEventStore.listen`).
- Commits of any process on SQLite: ``PRAGMA data_version`` of a read-only connection,
  which changes whenever another connection commits to the file (a few microseconds per
  check).
- Any other event store: a poll of the source's cheap change marker.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stabilize.events import PostgresEventStore, SqliteEventStore
from stabilize.events.bus import get_event_bus
from stabilize.events.model import Event

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""Seconds before watching again after the watch connection failed."""


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
        event_store: object,
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
        self._unsubscribe: Callable[[], None] | None = None
        self._listener: Any = None
        self._lock = threading.Lock()

    def start(self) -> None:
        """Subscribe to the event bus and start the watching thread."""
        self._unsubscribe = get_event_bus().subscribe(self._on_event)
        if isinstance(self.event_store, PostgresEventStore):
            target: Callable[[], None] = self._listen
        elif isinstance(self.event_store, SqliteEventStore):
            target = self._watch_file
        else:
            target = self._poll
        self._thread = threading.Thread(target=target, name="monitor-watch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop watching (waits for the thread)."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        with self._lock:
            if self._listener is not None:
                self._listener.wake()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _on_event(self, event: Event) -> None:
        self.wake()

    def _listen(self) -> None:
        store = self.event_store
        assert isinstance(store, PostgresEventStore)
        while not self._stop.is_set():
            try:
                listener = store.listen(None)
            except Exception:
                log.warning("cannot LISTEN for events; polling", exc_info=True)
                self._poll_once_then_wait(RETRY_S)
                continue
            with self._lock:
                self._listener = listener
            if self._stop.is_set():
                listener.wake()
            self.wake()  # commits made while not listening were not notified
            try:
                while not self._stop.is_set():
                    if listener.wait_for_events(30.0):
                        self.wake()
            except Exception:
                log.warning("the LISTEN connection failed; listening again", exc_info=True)
            finally:
                with self._lock:
                    self._listener = None
                with contextlib.suppress(Exception):
                    listener.close()

    def _watch_file(self) -> None:
        store = self.event_store
        assert isinstance(store, SqliteEventStore)
        conn: sqlite3.Connection | None = None
        version = None
        pause = 0.0
        while not self._stop.wait(pause):
            pause = self.interval
            try:
                if conn is None:
                    uri = Path(store.path).resolve().as_uri() + "?mode=ro"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                    version = None
                current = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                log.warning("cannot watch %s for commits", store.path, exc_info=True)
                if conn is not None:
                    conn.close()
                conn = None
                pause = RETRY_S
                continue
            if current != version:
                if version is not None:
                    self.wake()
                version = current
        if conn is not None:
            conn.close()

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

    def _poll_once_then_wait(self, seconds: float) -> None:
        self._stop.wait(seconds)
        if not self._stop.is_set():
            self.wake()
