"""WAL checkpoints of a SQLite file, off the commit path.

By default SQLite checkpoints inside the commit that pushes the write-ahead log past 1,000
pages: that commit copies the pages into the database file and flushes it to disk, which
takes milliseconds to tens of milliseconds, while every other commit takes tens of
microseconds. The engine's connection turns that off (``wal_autocheckpoint = 0``) and a
daemon thread with a connection of its own runs ``PRAGMA wal_checkpoint(PASSIVE)`` instead:
as soon as ``every_commits`` commits are waiting, else a second after the first of them.
A passive checkpoint never blocks writers or readers, so commits keep going meanwhile.

Durability does not change: a commit is in the log when it returns, whether or not the log
was checkpointed yet. If the thread cannot keep up (or died), the committing thread runs a
checkpoint itself once the log holds ``inline_after`` commits that were not checkpointed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger(__name__)


class Checkpointer:
    """Checkpoints one WAL file from a background thread.

    Args:
        path: The database file.
        every_commits: Wake the thread after this many commits.
        inline_after: Commits without a checkpoint after which the committer runs one.
    """

    def __init__(self, path: str, every_commits: int = 64, inline_after: int = 4096) -> None:
        self.path = path
        self.every_commits = every_commits
        self.inline_after = inline_after
        self.checkpoints = 0
        self._pending = 0  # commits since the last checkpoint began
        self._lock = threading.Lock()
        self._wake = threading.Event()  # commits are waiting to be checkpointed
        self._burst = threading.Event()  # enough of them not to wait any longer
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"stabilize-checkpoint:{path}", daemon=True
        )
        self._thread.start()

    def committed(self, conn: sqlite3.Connection) -> None:
        """Note one commit on ``conn`` (called by the committing thread, after COMMIT)."""
        with self._lock:
            self._pending += 1
            pending = self._pending
        if pending >= self.inline_after:
            self._checkpoint(conn)
        elif pending == 1:
            self._wake.set()  # the first commit since a checkpoint starts the timer
        elif pending >= self.every_commits:
            self._burst.set()

    def stop(self) -> None:
        """Tell the thread to stop, without waiting for it (safe from a finalizer)."""
        self._stop.set()
        self._wake.set()
        self._burst.set()

    def close(self) -> None:
        """Stop the thread and wait for it (SQLite checkpoints when the last connection closes)."""
        self.stop()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 1000")
            while not self._stop.is_set():
                self._wake.wait()
                self._wake.clear()
                if self._stop.is_set():
                    break
                # Take what the next second brings, or a burst as soon as it is there.
                self._burst.wait(1.0)
                self._burst.clear()
                self._checkpoint(conn)
        except Exception:
            log.warning(
                "WAL checkpoints of %s stopped; commits will run them", self.path, exc_info=True
            )
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            if self._pending == 0:
                return
            self._pending = 0
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            self.checkpoints += 1
        except sqlite3.Error:
            log.debug("checkpoint of %s failed; retried later", self.path, exc_info=True)
            with self._lock:
                self._pending += 1
            self._wake.set()
