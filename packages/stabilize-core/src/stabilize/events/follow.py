"""Following the commits of an event log from a thread: what live readers wake on.

The gateway and the monitor read the log when something may have been committed; this is
their wake-up, whatever the database (see :meth:`EventStore.watch`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stabilize.backends._base import CommitWatcher, EventStore

log = logging.getLogger(__name__)

RETRY_S = 1.0
"""Seconds before watching again when the store could not be watched."""

WAIT_S = 30.0
"""Longest single wait of the thread (it only bounds how long a wait blocks)."""


def can_follow(store: object) -> bool:
    """True when ``store`` offers :meth:`~stabilize.events.EventStore.watch`.

    Every store of stabilize does; another implementation of the protocol may not, and
    its readers then poll.
    """
    return callable(getattr(store, "watch", None))


def follow_commits(
    store: EventStore,
    on_commit: Callable[[], None],
    *,
    workflow_id: str | None = None,
    interval: float | None = None,
    name: str = "stabilize-follow",
) -> Callable[[], None]:
    """Call ``on_commit`` from a thread of its own whenever ``store`` notices a commit.

    ``on_commit`` is also called once each time watching (re)starts, since commits made
    before are not noticed, and every :data:`RETRY_S` seconds while the store cannot be
    watched (why is logged once).

    Args:
        store: The event log (see :func:`can_follow`).
        on_commit: Called with no argument, from the thread: keep it short.
        workflow_id: Only this workflow's commits, where the store can tell them apart.
        interval: Seconds between two looks, for a store that has to look (SQLite).
        name: The thread's name.

    Returns:
        A function that stops following and waits for the thread (safe to call twice).
    """
    follower = _Follower(store, on_commit, workflow_id, interval)
    thread = threading.Thread(target=follower.run, name=name, daemon=True)
    thread.start()

    def stop() -> None:
        follower.stop()
        if thread is not threading.current_thread():
            thread.join()

    return stop


class _Follower:
    def __init__(
        self,
        store: EventStore,
        on_commit: Callable[[], None],
        workflow_id: str | None,
        interval: float | None,
    ) -> None:
        self.store = store
        self.on_commit = on_commit
        self.workflow_id = workflow_id
        self.interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._watcher: CommitWatcher | None = None
        self._failing = False

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            if self._watcher is not None:
                self._watcher.wake()

    def run(self) -> None:
        while not self._stopped.is_set():
            watcher = self._watch()
            if watcher is None:
                if not self._stopped.wait(RETRY_S):
                    self.on_commit()  # cannot be told of commits: look now and then
                continue
            try:
                self.on_commit()  # commits made before the watch are not noticed by it
                while not self._stopped.is_set():
                    if watcher.wait(WAIT_S) and not self._stopped.is_set():
                        self.on_commit()
            except Exception:
                log.warning("following the commits of the event log failed", exc_info=True)
            finally:
                with self._lock:
                    self._watcher = None
                with contextlib.suppress(Exception):
                    watcher.close()

    def _watch(self) -> CommitWatcher | None:
        try:
            watcher = self.store.watch(self.workflow_id, interval=self.interval)
        except Exception:
            if not self._failing:
                log.warning("cannot watch the event log for commits; polling", exc_info=True)
            self._failing = True
            return None
        self._failing = False
        with self._lock:
            self._watcher = watcher
        if self._stopped.is_set():  # stopped before the watcher could be woken
            watcher.wake()
        return watcher
