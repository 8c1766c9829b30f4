"""What :meth:`QueueProcessor.process_all` reports: a count that also says what was left."""

from __future__ import annotations


class ProcessResult(int):
    """The number of messages :meth:`~stabilize.QueueProcessor.process_all` processed.

    It is an ``int`` (code that counts messages keeps working) that also says whether
    work was left when the call returned (issue 15: a timeout used to look like success).

    Attributes:
        pending: Messages still queued when it returned, ready or due later (retries,
            polls, waits, timers).
        running: Tasks still running when it returned (their results are committed by
            the next call).
        timed_out: The timeout ran out while work was ready or running; a larger timeout
            (or another call) would have done more.
    """

    pending: int
    running: int
    timed_out: bool

    def __new__(
        cls, processed: int, *, pending: int = 0, running: int = 0, timed_out: bool = False
    ) -> ProcessResult:
        """Build the result of a call that processed ``processed`` messages."""
        result = super().__new__(cls, processed)
        result.pending = pending
        result.running = running
        result.timed_out = timed_out
        return result

    @property
    def finished(self) -> bool:
        """True when nothing was left: no message queued and no task running."""
        return self.pending == 0 and self.running == 0

    def __repr__(self) -> str:
        return (
            f"ProcessResult({int(self)}, pending={self.pending}, running={self.running}, "
            f"timed_out={self.timed_out})"
        )
