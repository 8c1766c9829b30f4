"""Running a task on the processor's own thread, and handing the loop over when it is slow.

When a step of a processor's loop (of :meth:`QueueProcessor.start`, or of
:meth:`QueueProcessor.process_all`, see ``_drain``) dispatches one sync task and no other
task runs (a chain's next stage), handing it to a pool thread and waiting for its result
costs two thread switches, about a third of a chain's time per stage. The loop's thread
runs such a task itself instead (:class:`InlineRuns`). The :class:`Handover` watches it:
a task still running after ``inline_handover_ms`` gets a helper thread that steps the
processor (commits other results, claims new work, renews leases, enforces timeouts and
cancellations) until the task returns and the processor's thread takes the loop back.
Only one thread steps the processor at any time: the helper starts while the processor's
thread is inside user code and ends before that thread steps again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from stabilize.queue.processor._runner import InFlight, Runner, runs_here
from stabilize.queue.processor.config import INLINE_MIN_TIMEOUT_FACTOR

if TYPE_CHECKING:
    from stabilize.queue.processor._drain import DrainRun
    from stabilize.queue.processor._processor import QueueProcessor

log = logging.getLogger("stabilize.processor")


class Handover:
    """Starts a helper thread when a task run on the processor's thread outlasts ``after_s``.

    :meth:`begin` and :meth:`end` bracket each such run (on the processor's thread). A
    watcher thread, started on first use, checks the run in progress about every
    ``after_s`` while runs go on, and sleeps without a timeout once they stop: a chain
    of short tasks costs it a wake-up per period, not one per task.

    Args:
        after_s: How long a run may last before the helper takes over.
        start_helper: Starts and returns the helper thread (called once per slow run).
    """

    def __init__(self, after_s: float, start_helper: Callable[[], threading.Thread]) -> None:
        self._after = after_s
        self._start_helper = start_helper
        self._cond = threading.Condition(threading.Lock())
        self._run = 0
        """The number of the run in progress (0: none)."""
        self._runs = 0
        self._started = 0.0
        self._idle = False
        self._helper: threading.Thread | None = None
        self._closed = False
        self._watcher: threading.Thread | None = None

    def begin(self) -> None:
        """Note that a task starts on the processor's thread now."""
        with self._cond:
            self._runs += 1
            self._run = self._runs
            self._started = time.monotonic()
            if self._watcher is None:
                self._watcher = threading.Thread(
                    target=self._watch, name="stabilize-handover", daemon=True
                )
                self._watcher.start()
            elif self._idle:
                self._cond.notify()

    def end(self) -> threading.Thread | None:
        """Note that the task returned; return the helper that took over meanwhile, if any.

        The caller takes the loop back from that helper before it steps again.
        """
        with self._cond:
            self._run = 0
            helper, self._helper = self._helper, None
            return helper

    def close(self) -> None:
        """End the watcher thread (a later :meth:`begin` starts a new one)."""
        with self._cond:
            self._closed = True
            self._cond.notify()
            watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)
        with self._cond:
            self._closed = False

    def _watch(self) -> None:
        with self._cond:
            seen = self._runs
            while not self._closed:
                if self._run and self._helper is None:
                    left = self._started + self._after - time.monotonic()
                    if left <= 0:
                        self._helper = self._start_helper()
                        continue
                    seen = self._runs
                    self._cond.wait(left)
                    # Runs that began and ended meanwhile leave no trace: nothing is due.
                    continue
                if self._runs != seen:
                    # Runs come and go (a chain of short tasks): look again in a period
                    # rather than sleep until the next begin() wakes this thread, which
                    # would cost a wake-up (and an interpreter-lock hand-off) per run.
                    # A run that begins meanwhile is seen before it is due.
                    seen = self._runs
                    self._cond.wait(self._after)
                    continue
                self._idle = True
                self._cond.wait()
                self._idle = False


class InlineRuns:
    """The tasks a processor's loop runs on its own thread, and the helper meanwhile.

    One per processor. A loop's thread (``start()``'s, or ``process_all()``'s) asks
    :meth:`choose` after each step whether to run the one task it dispatched itself,
    then :meth:`run_here` runs it, with the :class:`Handover` starting a helper that
    steps the loop when the task is slow. One such task runs at a time (the lock).
    """

    def __init__(self, processor: QueueProcessor) -> None:
        self._proc = processor
        self._lock = threading.Lock()
        """Held while a loop's thread runs a task itself."""
        self._run: DrainRun | None = None
        """The ``process_all`` run whose thread runs a task itself (None: ``start()``'s)."""
        self.handover: Handover | None = None
        self.helper: threading.Thread | None = None
        """Steps the loop while the loop's thread runs a slow task itself."""
        self._reclaim = threading.Event()
        self._helper_error: Exception | None = None

    def choose(
        self, dispatch: list[tuple[InFlight, timedelta | None]]
    ) -> tuple[InFlight, timedelta | None] | None:
        """The execution of ``dispatch`` this thread runs itself, if any.

        Only on the loop thread of ``start()`` or ``process_all()`` (not on a helper,
        nor in ``process_one()``), only a sync task that is all there is to run, only if
        its execution timeout, if any, is long enough to be enforced by the helper, and
        only if no other loop's thread runs a task itself now (one that outlived the
        call of ``process_all`` that started it, say). Takes the lock, which
        :meth:`run_here` releases.
        """
        proc = self._proc
        handover_ms = proc.config.inline_handover_ms
        if len(dispatch) != 1 or handover_ms <= 0:
            return None
        current = threading.current_thread()
        if current is not proc._thread and current is not proc._drainer.thread:
            return None
        if any(not f.abandoned for f in proc._inflight.values() if f is not dispatch[0][0]):
            return None
        flight, timeout = dispatch[0]
        if not runs_here(flight):
            return None
        if timeout is not None and (
            timeout.total_seconds() * 1000 < INLINE_MIN_TIMEOUT_FACTOR * handover_ms
        ):
            return None
        if not self._lock.acquire(blocking=False):
            return None
        return flight, timeout

    def run_here(
        self, flight: InFlight, timeout: timedelta | None, run: DrainRun | None = None
    ) -> None:
        """Run ``flight`` on this thread; take the loop back from a helper that stepped it.

        ``run``: the ``process_all`` run this thread works for (None: ``start()``'s loop).
        """
        try:
            runner = self._proc._ensure_runner()
            handover = self.handover
            if handover is None:
                after = self._proc.config.inline_handover_ms / 1000
                handover = self.handover = Handover(after, self._start_helper)
            self._run = run
            handover.begin()
            try:
                runner.run_here(flight, timeout)
            finally:
                helper = handover.end()
                if helper is not None:
                    self._take_back(helper, runner)
        finally:
            self._run = None
            self._lock.release()

    def close_handover(self) -> None:
        """End the handover's watcher (a later task run here starts a new one)."""
        handover, self.handover = self.handover, None
        if handover is not None:
            handover.close()

    def close_idle_handover(self) -> None:
        """End the handover's watcher unless a task runs on a loop's thread now.

        Called when ``process_all``'s thread ends: the watcher would otherwise keep the
        processor alive.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            if not self._proc.is_running:
                self.close_handover()
        finally:
            self._lock.release()

    def _start_helper(self) -> threading.Thread:
        thread = threading.Thread(target=self._help, name="stabilize-processor-helper", daemon=True)
        self.helper = thread
        thread.start()
        return thread

    def _help(self) -> None:
        """Step the loop until the loop's thread, back from a slow task, takes it back.

        Once a stop is requested it stops after ``shutdown_timeout_seconds``, as the loop's
        own drain does: a task that never returns then no longer has its lease renewed,
        and another worker adopts its message. For ``process_all``'s thread, see
        :meth:`Drainer.help`.
        """
        proc = self._proc
        if self._run is not None:
            proc._drainer.help(self._reclaim)
            return
        config = proc.config
        poll = config.poll_frequency_ms / 1000
        drain_until: float | None = None
        while not self._reclaim.is_set():
            if proc._stop.is_set():
                now = time.monotonic()
                if drain_until is None:
                    drain_until = now + config.shutdown_timeout_seconds
                elif now >= drain_until:
                    return
            try:
                _, claimed = proc._step(poll)
            except Exception as exc:
                if not proc.backend.is_transient_error(exc):
                    # Raised on the loop's thread, which handles it as its own.
                    self._helper_error = exc
                    return
                log.warning("database error, retrying: %s", exc)
                self._reclaim.wait(config.retry_delay.total_seconds())
                continue
            if not (claimed or proc._inflight):
                proc.backend.wait_for_work(poll, self._reclaim)

    def _take_back(self, helper: threading.Thread, runner: Runner) -> None:
        self._reclaim.set()
        runner.nudge()  # a helper waiting for results
        self._proc.backend.wake_waiters()  # a helper waiting for work
        helper.join()
        self._reclaim.clear()
        self.helper = None
        error, self._helper_error = self._helper_error, None
        if error is not None:
            raise error
