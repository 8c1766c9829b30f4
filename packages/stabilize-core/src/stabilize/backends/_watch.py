"""What every dialect's commit watcher shares: this process's commits, waking, closing.

A dialect supplies how commits of other processes are noticed (``_wait``), how a running
wait is interrupted (``_interrupt``) and what to release (``_release``). Commits of this
process come through the event bus, where each backend publishes what it committed, so
they wake a watcher at once whatever the dialect.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod

from stabilize.events.bus import get_event_bus
from stabilize.models.event import Event


class Watcher(ABC):
    """The dialect-neutral half of a :class:`~stabilize.backends._base.CommitWatcher`.

    A subclass sets up what ``_interrupt`` uses before calling this constructor: the bus
    may call it from then on.

    Args:
        workflow_id: Only this workflow's commits (None: any).
    """

    def __init__(self, workflow_id: str | None) -> None:
        self.workflow_id = workflow_id
        self._lock = threading.Lock()
        self._committed = False
        self._closed = False
        self._waiting = False
        ref = weakref.ref(self)

        def on_event(event: Event) -> None:
            watcher = ref()
            if watcher is not None:
                watcher._on_event(event)

        # The bus holds no reference to the watcher: one nobody closed can be collected.
        unsubscribe = get_event_bus().subscribe(on_event, workflow_id)
        self._unsubscribe = weakref.finalize(self, unsubscribe)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def wait(self, timeout: float) -> bool:
        """Block until a commit is noticed, ``timeout`` seconds pass, or :meth:`wake`.

        Args:
            timeout: The most seconds to wait.

        Returns:
            True when commits may have happened since the watcher was made or the last
            ``wait`` returned True; False after the timeout, a :meth:`wake`, or once closed.
        """
        with self._lock:
            if self._closed:
                return False
            self._waiting = True
        try:
            return self._wait(max(0.0, timeout))
        finally:
            if self._stop_waiting():  # closed meanwhile: the waiting thread releases
                self._release()

    def wake(self) -> None:
        """Make the running ``wait`` (or the next one, if none runs) return now."""
        self._interrupt()

    def close(self) -> None:
        """Stop watching and release the connection (safe from any thread, twice too)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiting = self._waiting
        self._unsubscribe()
        self._interrupt()
        if not waiting:
            self._release()

    def _stop_waiting(self) -> bool:
        """Note that no wait runs any more; True when the watcher was closed meanwhile."""
        with self._lock:
            self._waiting = False
            return self._closed

    def _on_event(self, event: Event) -> None:
        if event.sequence > 0:  # progress updates not committed yet have sequence 0
            with self._lock:
                self._committed = True
            self._interrupt()

    def _take_committed(self) -> bool:
        """Whether this process committed since the last call (and forget it)."""
        with self._lock:
            committed, self._committed = self._committed, False
        return committed

    @abstractmethod
    def _wait(self, timeout: float) -> bool:
        """:meth:`wait`, on the waiting thread (never called once closed)."""

    @abstractmethod
    def _interrupt(self) -> None:
        """Make the running ``_wait`` (or the next one) return; never raises."""

    @abstractmethod
    def _release(self) -> None:
        """Close the connection; called once, by the last thread that used it."""
