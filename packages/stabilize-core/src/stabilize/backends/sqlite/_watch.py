"""Noticing commits to a SQLite file: its ``data_version``, seen from a connection of our own.

``PRAGMA data_version`` changes whenever another connection (of any process) commits to
the file, and costs a few microseconds to read: looking every few milliseconds is far
cheaper than reading the log that often.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from stabilize.backends._watch import Watcher

log = logging.getLogger(__name__)

WATCH_INTERVAL = 0.005
"""Default seconds between two looks at ``data_version``."""

RETRY_S = 1.0
"""Seconds between two attempts to open the file again after it could not be read."""


class DataVersionWatcher(Watcher):
    """Notices commits to one SQLite file (from :meth:`SqliteEventStore.watch`).

    The connection is read-only and opened at once, so a commit made after the watcher
    was made is noticed even before the first :meth:`wait`. If the file cannot be read,
    the watcher opens it again every :data:`RETRY_S` seconds, and ``wait`` returns True
    meanwhile (commits cannot be noticed then: readers should look).

    Args:
        path: The database file.
        workflow_id: Commits of this process count only for this workflow (the file's
            ``data_version`` cannot tell workflows apart).
        interval: Seconds between two looks (None: :data:`WATCH_INTERVAL`).
    """

    def __init__(
        self, path: str, workflow_id: str | None = None, interval: float | None = None
    ) -> None:
        self._signal = threading.Event()  # before the bus may call _interrupt
        super().__init__(workflow_id)
        self.path = path
        self.interval = WATCH_INTERVAL if interval is None else interval
        self._conn: sqlite3.Connection | None = None
        self._version: int | None = None
        self._failing = False
        self._open()

    def _wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._take_committed() or self._changed():
                return True
            remaining = deadline - time.monotonic()
            if self._conn is None:
                # Cannot look: after a pause, the caller had better read the log.
                return not self._pause(min(RETRY_S, remaining)) or self._take_committed()
            if remaining <= 0:
                return False
            if self._pause(min(self.interval, remaining)):
                return self._take_committed()

    def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True when interrupted (a wake, a commit, a close).

        The signal is cleared only when it woke this pause: one set just after a pause
        timed out must wake the next (a stop's wake was lost that way and its follower
        slept on for the rest of its wait).
        """
        woken = self._signal.wait(max(0.0, seconds))
        if woken:
            self._signal.clear()
        return woken

    def _changed(self) -> bool:
        """Look at ``data_version``: True when it changed, or the file was opened again."""
        with self._lock:
            if self._closed:
                return False
            if self._conn is None:
                return self._open_locked()
            try:
                version = int(self._conn.execute("PRAGMA data_version").fetchone()[0])
            except sqlite3.Error:
                self._broken()
                self._open_locked()  # at once: the gap this True reports ends here if it works
                return True
            changed, self._version = version != self._version, version
            return changed

    def _open(self) -> None:
        with self._lock:
            self._open_locked()

    def _open_locked(self) -> bool:
        """Open the file and read the version to compare with; True when it worked."""
        try:
            uri = Path(self.path).resolve().as_uri() + "?mode=ro"
            conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            try:
                self._version = int(conn.execute("PRAGMA data_version").fetchone()[0])
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error:
            self._broken()
            return False
        self._conn = conn
        self._failing = False
        return True

    def _broken(self) -> None:
        """Forget the connection after an error (logged once per run of failures)."""
        if not self._failing:
            log.warning("cannot watch %s for commits; readers poll", self.path, exc_info=True)
        self._failing = True
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _interrupt(self) -> None:
        self._signal.set()

    def _release(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
