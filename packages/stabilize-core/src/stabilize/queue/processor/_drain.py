"""``process_all()``: the loop runs on a thread of its own while the caller waits.

A chain's next task is then run by that thread itself (see ``_inline``), as it is by the
loop of a started processor, instead of being handed to a pool thread and waited for: two
thread switches less per stage. The caller still gets control back at its timeout, even
while a task runs on that thread: it waits until the loop is in no step (steps and tasks
never overlap on it), marks the run abandoned, and returns what was left. From then on no
step of that run begins; the task that was running finishes on its own and its result is
committed by the next call (as a pool thread's was).

Only one thread steps the processor at a time: a step holds the processor's step lock,
which a task never does, and an abandoned run takes no step after the caller returned.
A later call posts a run of its own: while the loop's thread is still inside the earlier
run's task, the helper that took over the loop steps for the new run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from stabilize.queue.processor._result import ProcessResult

if TYPE_CHECKING:
    from stabilize.queue.processor._processor import QueueProcessor

log = logging.getLogger("stabilize.processor")

DRAIN_THREAD = "stabilize-process-all"
"""The name of the thread that runs ``process_all()``'s loop (and the tasks it runs inline)."""

WAIT_SLICE_S = 60.0
"""The longest single wait of the caller (``Condition.wait`` refuses an infinite one)."""

LINGER_S = 1.0
"""Seconds the loop's thread waits for the next ``process_all()`` before it ends."""


@dataclass(eq=False)
class DrainRun:
    """One call of ``process_all()``: its deadline and how it ended."""

    deadline: float
    """``time.monotonic()`` at which the call returns."""
    acked_before: int
    """The processor's count of acknowledged messages when the call began."""
    stop: threading.Event = field(default_factory=threading.Event)
    """Set when the run ends or is abandoned: ends the loop's waits for work."""
    done: bool = False
    """The loop has finished the run (set by the loop's thread, or by its helper)."""
    abandoned: bool = False
    """The caller returned (timeout or interrupt) before the loop finished the run."""
    result: ProcessResult | None = None
    error: BaseException | None = None

    def steps(self) -> bool:
        """Whether a step for this run may begin now."""
        return not (self.done or self.abandoned) and time.monotonic() < self.deadline


class Drainer:
    """Runs ``process_all()``'s loop for one processor on a thread that outlives calls.

    The thread is started by the first call and ends after :data:`LINGER_S` without one,
    so that a processor nobody calls holds no thread.
    """

    def __init__(self, processor: QueueProcessor) -> None:
        self._proc = processor
        self._cond = threading.Condition(threading.Lock())
        self.run: DrainRun | None = None
        """The latest call's run."""
        self.thread: threading.Thread | None = None

    @property
    def busy(self) -> bool:
        """True while a call of ``process_all()`` waits for its run."""
        run = self.run
        return run is not None and not (run.done or run.abandoned)

    def process_all(self, timeout: float) -> ProcessResult:
        """Post a run, wait for it until ``timeout`` passes, and return its result."""
        proc = self._proc
        run = DrainRun(time.monotonic() + timeout, proc._acked)
        try:  # an interrupt may come as soon as the run is posted
            with self._cond:
                self.run = run
                if self.thread is None or not self.thread.is_alive():
                    self.thread = threading.Thread(
                        target=self._main, name=DRAIN_THREAD, daemon=True
                    )
                    self.thread.start()
                else:
                    self._cond.notify_all()
            with self._cond:
                while not run.done:
                    left = run.deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, WAIT_SLICE_S))
        except BaseException:
            self._abandon(run)  # Ctrl-C: no further step, the running task finishes alone
            raise
        if run.done or not self._abandon(run):
            if run.error is not None:
                raise run.error
            assert run.result is not None
            return run.result
        # The loop's thread is inside a task past the deadline (or ended a step just now).
        return proc._result(proc._acked - run.acked_before, timed_out=True)

    def _abandon(self, run: DrainRun) -> bool:
        """Stop ``run`` unless it is done; return True if it was stopped.

        Waits for the step in progress, if any: once this returns no step of ``run``
        is under way and none begins.
        """
        with self._proc._stepping, self._cond:
            if run.done:
                return False
            run.abandoned = True
            run.stop.set()
            return True

    def _main(self) -> None:
        """The loop's thread: do each posted run; end once none came for :data:`LINGER_S`."""
        while (run := self._next_run()) is not None:
            try:
                while not (run.done or run.abandoned):
                    result = self._once(run)
                    if result is not None:
                        self._finish(run, result)
            except BaseException as exc:
                self._finish(run, None, exc)

    def help(self, reclaim: threading.Event) -> None:
        """Step for the waiting call while the loop's thread runs a task, until ``reclaim``.

        Run by the helper that took over the loop (see ``_inline``). It can end a run,
        too: a task given up on (past its timeout, or canceled) may never return, yet
        everything else can be done. It pauses while no call waits.
        """
        poll = self._proc.config.poll_frequency_ms / 1000
        while not reclaim.is_set():
            run = self.run
            if run is None or not run.steps():
                reclaim.wait(poll)
                continue
            try:
                result = self._once(run)
            except BaseException as exc:
                self._finish(run, None, exc)
                continue
            if result is not None:
                self._finish(run, result)

    def _next_run(self) -> DrainRun | None:
        with self._cond:
            while True:
                run = self.run
                if run is not None and not (run.done or run.abandoned):
                    return run
                if not self._cond.wait(LINGER_S):
                    run = self.run
                    if run is not None and not (run.done or run.abandoned):
                        return run
                    if self.thread is threading.current_thread():
                        self.thread = None  # the next call starts a thread of its own
                    break
        self._proc._inline_runs.close_idle_handover()
        return None

    def _finish(
        self, run: DrainRun, result: ProcessResult | None, error: BaseException | None = None
    ) -> None:
        """End ``run`` with its result or error, unless it has ended already."""
        with self._cond:
            if run.done or run.abandoned:
                return
            run.result, run.error = result, error
            run.done = True
            run.stop.set()  # a wait for work of the loop's thread, back from a task, ends
            self._cond.notify_all()

    def _once(self, run: DrainRun) -> ProcessResult | None:
        """One turn of the loop: the run's result if it ends now, else None."""
        proc = self._proc
        config = proc.config
        poll = config.poll_frequency_ms / 1000
        remaining = run.deadline - time.monotonic()
        if remaining <= 0:
            return proc._result(proc._acked - run.acked_before, timed_out=True)
        try:
            done, claimed = proc._step(min(remaining, poll), run=run)
            if done or claimed or proc._inflight or run.stop.is_set():
                return None
            count, earliest = proc._queue_depth()
        except Exception as exc:
            if not proc.backend.is_transient_error(exc):
                raise
            log.warning("database error, retrying: %s", exc)
            run.stop.wait(min(config.retry_delay.total_seconds(), max(0.0, remaining)))
            return None
        processed = proc._acked - run.acked_before
        if count == 0:
            return ProcessResult(processed)
        wait = (earliest - proc._now_ms()) / 1000 if earliest is not None else 0.0
        if wait > remaining:
            return ProcessResult(processed, pending=count)
        pause = min(max(wait, poll), remaining)
        proc.backend.wait_for_work(max(0.0, min(pause, 1.0)), run.stop)
        return None
