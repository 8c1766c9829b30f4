"""Graceful shutdown of worker processes on SIGTERM and SIGINT.

The first signal stops every registered processor from claiming work and lets the tasks
it runs finish and commit (their next stages are left in the queue, unleased, for other
workers). Tasks still running when ``shutdown_timeout`` runs out, or when a second signal
comes, have their leases released, so that another worker takes their messages at once
instead of waiting for the leases to expire; the process then exits with status 1
(a task thread cannot be stopped, and would keep the interpreter from exiting).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from stabilize.queue.processor import QueueProcessor

log = logging.getLogger("stabilize.lifecycle")

FORCED_EXIT_STATUS = 1
"""The exit status of a process whose running tasks were abandoned (leases released)."""


class LifecycleManager:
    """Stops processors gracefully on SIGTERM/SIGINT (see the module docstring).

    Args:
        shutdown_timeout: Seconds running tasks get to finish after the first signal.
        graceful_shutdown_delay: Accepted for compatibility; unused (a second signal, or
            ``shutdown_timeout``, forces the end).
    """

    def __init__(
        self, shutdown_timeout: float = 30.0, graceful_shutdown_delay: float = 5.0
    ) -> None:
        if shutdown_timeout < 0:
            raise ValueError(f"shutdown_timeout must be >= 0, got {shutdown_timeout}")
        self.shutdown_timeout = shutdown_timeout
        self.graceful_shutdown_delay = graceful_shutdown_delay
        self._processors: list[QueueProcessor] = []
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._requested = threading.Event()
        self._forced = threading.Event()
        self._done = threading.Event()
        self._installed = False
        self._previous: dict[int, Any] = {}
        self._exit: Callable[[int], None] = os._exit

    # -- registration ----------------------------------------------------------------

    def register_processor(self, processor: QueueProcessor) -> None:
        """Stop ``processor`` on shutdown (registering it twice changes nothing).

        Args:
            processor: A processor of this process.
        """
        with self._lock:
            if processor not in self._processors:
                self._processors.append(processor)

    def unregister_processor(self, processor: QueueProcessor) -> None:
        """Forget ``processor``: a shutdown no longer stops it.

        Args:
            processor: A processor registered before; any other is ignored.
        """
        with self._lock:
            if processor in self._processors:
                self._processors.remove(processor)

    def on_shutdown(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Register ``callback`` to run after the processors stopped (usable as a decorator).

        Args:
            callback: Called with no argument; an exception it raises is logged.

        Returns:
            ``callback`` itself.
        """
        self.add_shutdown_callback(callback)
        return callback

    def add_shutdown_callback(self, callback: Callable[[], None]) -> None:
        """Register ``callback`` to run after the processors stopped, in order.

        Args:
            callback: Called with no argument; an exception it raises is logged and the
                next callback still runs.
        """
        with self._lock:
            self._callbacks.append(callback)

    # -- signals ---------------------------------------------------------------------

    def install_handlers(self) -> None:
        """Handle SIGTERM and SIGINT (from the main thread); safe to call twice."""
        with self._lock:
            if self._installed:
                return
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle_signal)
            atexit.register(self._at_exit)
            self._installed = True

    def uninstall_handlers(self) -> None:
        """Restore the signal handlers found by :meth:`install_handlers`."""
        with self._lock:
            if not self._installed:
                return
            for sig, previous in self._previous.items():
                signal.signal(sig, previous)
            atexit.unregister(self._at_exit)
            self._installed = False

    def _handle_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._requested.is_set():
            log.warning("%s again: releasing the leases of running tasks and exiting", name)
            self._forced.set()
            return
        log.warning("%s: stopping; running tasks may finish", name)
        self.request_shutdown()

    # -- shutdown --------------------------------------------------------------------

    def request_shutdown(self) -> None:
        """Start the graceful shutdown in a background thread (once)."""
        with self._lock:
            if self._requested.is_set():
                return
            self._requested.set()
        threading.Thread(target=self._shutdown, name="stabilize-shutdown", daemon=True).start()

    @property
    def is_shutdown_requested(self) -> bool:
        """True once a signal or :meth:`request_shutdown` started the shutdown."""
        return self._requested.is_set()

    @property
    def is_shutdown_in_progress(self) -> bool:
        """True between the start of the shutdown and its end."""
        return self._requested.is_set() and not self._done.is_set()

    def wait_for_shutdown(self, timeout: float | None = None) -> bool:
        """Block until a shutdown has completed; False if ``timeout`` ran out first.

        A worker's main thread typically starts its processors and then waits here. The
        wait wakes regularly so that signal handlers run in the main thread.

        Args:
            timeout: The most seconds to wait (default: no limit).

        Returns:
            True once the shutdown completed, False if ``timeout`` ran out first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._done.wait(0.1):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

    def _shutdown(self) -> None:
        with self._lock:
            processors = list(self._processors)
            callbacks = list(self._callbacks)
        for processor in processors:
            processor.request_stop()
        log.info(
            "no new work is claimed; waiting for %d running task(s)",
            sum(p.active_count for p in processors),
        )
        deadline = time.monotonic() + self.shutdown_timeout
        while any(_busy(p) for p in processors):
            if self._forced.wait(0.05) or time.monotonic() >= deadline:
                break
        abandoned = sum(p.active_count for p in processors)
        if abandoned:
            for processor in processors:
                _release_leases(processor)
        for processor in processors:
            try:
                processor.stop(wait=not abandoned, timeout=1.0)
            except Exception:
                log.exception("could not stop a processor")
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("shutdown callback %r failed", callback)
        self._done.set()
        if abandoned:
            log.warning(
                "exiting with %d task(s) still running; their leases were released", abandoned
            )
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            self._exit(FORCED_EXIT_STATUS)

    def _at_exit(self) -> None:
        # The interpreter is exiting without a signal: stop claiming, commit what runs.
        with self._lock:
            processors = list(self._processors)
        for processor in processors:
            try:
                processor.stop(wait=True, timeout=self.shutdown_timeout)
            except Exception:
                log.exception("could not stop a processor at exit")


def _busy(processor: QueueProcessor) -> bool:
    return processor.is_running and processor.active_count > 0


def _release_leases(processor: QueueProcessor) -> None:
    """Make every message leased by ``processor`` claimable now (its tasks are abandoned).

    A result that comes back later cannot commit: the lease fences it.
    """
    try:
        with processor.backend.transaction() as tx:
            released = tx.release_owner(processor.owner)
        log.warning("released %d lease(s) of worker %s", released, processor.owner)
    except Exception:
        log.exception("could not release the leases of worker %s", processor.owner)


_manager: LifecycleManager | None = None


def get_lifecycle_manager() -> LifecycleManager:
    """The process's lifecycle manager (created on first use, handlers not installed).

    Returns:
        The manager set by `set_lifecycle_manager`, or one made with the defaults.
    """
    global _manager
    if _manager is None:
        _manager = LifecycleManager()
    return _manager


def set_lifecycle_manager(manager: LifecycleManager) -> None:
    """Make ``manager`` the process's lifecycle manager.

    Args:
        manager: What `get_lifecycle_manager` returns from now on.
    """
    global _manager
    _manager = manager


def install_shutdown_handlers(
    shutdown_timeout: float = 30.0,
    graceful_shutdown_delay: float = 5.0,
    *,
    processors: Iterable[QueueProcessor] = (),
) -> LifecycleManager:
    """Install SIGTERM/SIGINT handlers that stop processors gracefully.

    Call it from the main thread. Register the processors here or later with
    :meth:`LifecycleManager.register_processor`, start them, then wait with
    :meth:`LifecycleManager.wait_for_shutdown`::

        manager = install_shutdown_handlers(shutdown_timeout=60, processors=[processor])
        processor.start()
        manager.wait_for_shutdown()   # returns after SIGTERM, once running tasks committed

    Args:
        shutdown_timeout: Seconds running tasks get to finish after the first signal;
            then (or on a second signal) their leases are released and the process exits
            with status 1.
        graceful_shutdown_delay: Accepted for compatibility; unused.
        processors: Processors to stop on shutdown.

    Returns:
        The manager, also made the process's (:func:`get_lifecycle_manager`).
    """
    manager = LifecycleManager(shutdown_timeout, graceful_shutdown_delay)
    for processor in processors:
        manager.register_processor(processor)
    manager.install_handlers()
    set_lifecycle_manager(manager)
    return manager
