"""Cooperative cancellation of running tasks.

When a task's workflow or stage is canceled (or its join cancels stragglers), the worker
running it notices within ``cancel_check_interval_seconds``: it sets the stage's
cancellation token, cancels an ``async`` task outright, calls the task's ``on_cancel``
hook, and discards whatever the task returns. A sync task should check
:func:`is_cancellation_requested` (or call :func:`raise_if_cancellation_requested`) in
its long loops.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from stabilize.errors import StabilizeError

if TYPE_CHECKING:
    from stabilize.models.stage import StageExecution


class TaskCancelledError(StabilizeError):
    """Raised by :func:`raise_if_cancellation_requested` in a canceled task."""


_EVENTS = threading.Lock()
"""Guards the creation of a token's event (shared: tokens are many, waits on them rare)."""


class CancellationToken:
    """A flag the engine sets when the task holding it should stop.

    Every task run gets one, and most never wait on it: the event that :meth:`wait`
    blocks on is made only when a task first waits.
    """

    __slots__ = ("_cancelled", "_event")

    def __init__(self) -> None:
        self._cancelled = False
        self._event: threading.Event | None = None

    def cancel(self) -> None:
        """Ask the task to stop."""
        with _EVENTS:
            self._cancelled = True
            event = self._event
        if event is not None:
            event.set()

    @property
    def is_cancelled(self) -> bool:
        """True once cancellation was requested."""
        return self._cancelled

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancellation is requested or ``timeout`` passes; return the flag.

        Args:
            timeout: The most seconds to wait (default: no limit).

        Returns:
            True when cancellation was requested, False if ``timeout`` ran out first.
        """
        with _EVENTS:
            if self._cancelled:
                return True
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        return event.wait(timeout)


def is_cancellation_requested(stage: StageExecution) -> bool:
    """Report whether the task that received ``stage`` has been asked to stop.

    Args:
        stage: The stage the task received (its copy carries the task's cancel token).

    Returns:
        True once the stage or its workflow was canceled while the task runs.
    """
    token = stage._cancel_token
    return token is not None and token.is_cancelled


def raise_if_cancellation_requested(stage: StageExecution) -> None:
    """Raise :class:`TaskCancelledError` when the task has been asked to stop.

    Args:
        stage: The stage the task received.

    Raises:
        TaskCancelledError: The stage or its workflow was canceled; the message names it.
    """
    if is_cancellation_requested(stage):
        raise TaskCancelledError(f"stage {stage.ref_id!r} was canceled")
