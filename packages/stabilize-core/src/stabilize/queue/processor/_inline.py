"""Running a task on the processor's own thread, and handing the loop over when it is slow.

When a step of a processor's loop (of :meth:`QueueProcessor.start`, or of
:meth:`QueueProcessor.process_all`, see ``_drain``) dispatches one sync task and no other
task runs (a chain's next stage), handing it to a pool thread and waiting for its result
costs two thread switches, about a third of a chain's time per stage. The loop's thread
runs such a task itself instead. The :class:`Handover`
watches it: a task still running after ``inline_handover_ms`` gets a helper thread that
steps the processor (commits other results, claims new work, renews leases, enforces
timeouts and cancellations) until the task returns and the processor's thread takes the
loop back. Only one thread steps the processor at any time: the helper starts while the
processor's thread is inside user code and ends before that thread steps again.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


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
            while not self._closed:
                if self._run and self._helper is None:
                    left = self._started + self._after - time.monotonic()
                    if left <= 0:
                        self._helper = self._start_helper()
                        continue
                    self._idle = False
                    self._cond.wait(left)
                    # Runs that began and ended meanwhile leave no trace: nothing is due.
                    continue
                self._idle = True
                self._cond.wait()
                self._idle = False
