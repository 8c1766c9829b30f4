"""What wakes the feed before its next poll: any commit to the log's database.

- PostgreSQL: a ``LISTEN`` connection receives the ``NOTIFY`` each commit that records
  events sends.
- SQLite: a read-only connection of its own checks ``PRAGMA data_version`` every few
  milliseconds; the value changes whenever another connection (any process) commits to the
  file. That costs a few microseconds per check, against a scan of the log per poll.
- Commits in this process also arrive through the in-process event bus.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from stabilize.events import PostgresEventStore, SqliteEventStore
from stabilize.events.bus import get_event_bus
from stabilize.events.model import Event

if TYPE_CHECKING:
    from stabilize.events.postgres import EventListener

log = logging.getLogger(__name__)

LISTEN_RETRY = 1.0
"""Seconds before listening again after the LISTEN connection failed."""

WATCH_INTERVAL = 0.005
"""Seconds between two ``PRAGMA data_version`` checks of a SQLite log."""


class Wakers:
    """Call ``wake`` (on the event loop) when events may have been committed.

    - Commits in this process: the in-process event bus (progress updates that are not
      committed yet, with sequence 0, are ignored).
    - Commits anywhere, on PostgreSQL: a thread keeps a ``LISTEN`` connection on the log's
      channel (:meth:`PostgresEventStore.listen`), reopened when it breaks.
    - Commits anywhere, on SQLite: a thread watches the file's ``PRAGMA data_version``.

    The feed polls anyway, so a lost wake-up only delays events by one poll interval.

    Bursts are coalesced: at most one wake-up is scheduled at a time.

    Args:
        source: The event store.
        wake: What to call, on ``loop``.
        loop: The gateway's event loop.
    """

    def __init__(
        self, source: object, wake: Callable[[], None], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.source = source
        self._wake = wake
        self._loop = loop
        self._pending = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: EventListener | None = None
        self._unsubscribe: Callable[[], None] | None = None

    @property
    def listening(self) -> bool:
        """True when commits of other processes wake the feed (PostgreSQL, SQLite)."""
        return isinstance(self.source, PostgresEventStore | SqliteEventStore)

    def start(self) -> None:
        """Subscribe to the bus and start the thread that watches the database."""
        self._unsubscribe = get_event_bus().subscribe(self._on_bus)
        if isinstance(self.source, PostgresEventStore):
            self._thread = threading.Thread(
                target=self._listen, args=(self.source,), name="gateway-listen", daemon=True
            )
        elif isinstance(self.source, SqliteEventStore):
            self._thread = threading.Thread(
                target=self._watch, args=(self.source.path,), name="gateway-watch", daemon=True
            )
        if self._thread is not None:
            self._thread.start()

    def close(self) -> None:
        """Unsubscribe and stop the thread (waits for it)."""
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

    def _on_bus(self, event: Event) -> None:
        if event.sequence > 0:
            self._fire()

    def _listen(self, store: PostgresEventStore) -> None:
        while not self._stop.is_set():
            try:
                listener = store.listen(None)
            except Exception:
                log.warning("cannot LISTEN for events; polling only", exc_info=True)
                self._stop.wait(LISTEN_RETRY)
                continue
            with self._lock:
                self._listener = listener
            if self._stop.is_set():
                listener.wake()
            self._fire()  # commits made while not listening were not notified
            try:
                while not self._stop.is_set():
                    if listener.wait_for_events(LISTEN_RETRY * 30):
                        self._fire()
            except Exception:
                log.warning("the LISTEN connection failed; listening again", exc_info=True)
            finally:
                with self._lock:
                    self._listener = None
                with contextlib.suppress(Exception):
                    listener.close()

    def _watch(self, path: str) -> None:
        conn: sqlite3.Connection | None = None
        version = None
        pause = 0.0
        while not self._stop.wait(pause):
            pause = WATCH_INTERVAL
            try:
                if conn is None:
                    uri = Path(path).resolve().as_uri() + "?mode=ro"
                    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
                    version = None
                current = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                log.warning("cannot watch %s for commits; polling only", path, exc_info=True)
                if conn is not None:
                    conn.close()
                conn = None
                pause = LISTEN_RETRY
                continue
            if current != version:
                if version is not None:
                    self._fire()
                version = current
        if conn is not None:
            conn.close()
