"""Settings of a :class:`~stabilize.queue.processor.QueueProcessor`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


@dataclass
class QueueProcessorConfig:
    """How a processor claims, runs and retries work.

    Attributes:
        poll_frequency_ms: How often an idle processor looks for due messages.
        max_workers: How many tasks run at once (sync tasks in threads, async ones on a loop).
        claim_batch_size: The most messages claimed in one transaction.
        lease_duration_seconds: How long a claimed message stays reserved before another
            worker may adopt it (``None``: the queue's ``lock_duration``). Renewed by a
            heartbeat while the task runs.
        enable_lock_heartbeat: Renew the leases of running tasks.
        lock_heartbeat_interval_seconds: Renewal period (``None``: a third of the lease).
        recover_on_start: On start, release at once the leases of dead worker processes on
            this host, so their interrupted tasks run again without waiting for expiry; then
            resume RUNNING workflows that have no message left
            (:class:`~stabilize.WorkflowRecovery`, when the processor has a store).
        recovery_interval_seconds: Repeat that check periodically (0: only on start).
        transient_max_attempts: Runs of a task that keeps raising ``TransientError`` before
            it fails (the first run counts).
        transient_backoff_base_seconds: First retry delay; it doubles on each retry.
        transient_backoff_max_seconds: Upper bound of the retry delay.
        transient_jitter: Random spread of the retry delay (0.25: plus or minus 25 %).
        default_poll_seconds: Delay before re-running a plain task that returned ``running()``.
        stop_on_error: Stop the processor when the engine itself fails (not a task).
        shutdown_timeout_seconds: How long :meth:`stop` waits for running tasks by default.
        cancel_check_interval_seconds: How often running tasks are checked against the
            database for cancellation (of their workflow, stage, or as join stragglers).
        retry_delay: Delay before retrying a transaction that failed on a database error.
        progress_flush_interval_seconds: How often the progress updates of running tasks
            (``emit_progress``) are recorded in the event log, all of them in one commit
            (0: only with the task's result). Live listeners get them at once regardless.
        result_gather_ms: When a task finishes while tasks that started within the last
            20 times this (10 ms by default) are still running, wait up to this long for
            the next of them before committing, and again after each that comes (at most
            4 times this in all): one transaction then commits results that arrive
            together instead of one each. Tasks running longer are not waited for, nor is
            a task alone (a chain). 0 commits each result at once.
        busy_claim_interval_ms: While a processor has its next task in hand (a chain's
            next stage is leased to it as it is queued) and its last claim found no more
            work, it does not claim again for this long: a claim that finds nothing costs
            a statement (a round trip on PostgreSQL) in every step. Work queued by this
            process, or released by it, is claimed at the next step regardless; work queued
            by another process, a delayed message falling due and an expired lease wait up
            to this long for a busy processor (an idle one, of any process, takes them at
            once). Measured on the processor's clock. 0 claims in every step.
        inline_handover_ms: A processor's loop (of :meth:`start` or :meth:`process_all`)
            whose step hands out one sync task while no other task runs (a chain's next
            stage) runs that task on its own thread, which saves two thread switches per
            stage. If the task still runs after this many milliseconds, a helper thread
            takes over the loop (other work, heartbeats, timeouts, cancellations) until it
            returns. Tasks with an execution timeout under 10 times this run on the pool,
            as do async tasks. 0 runs every task on the pool.
    """

    poll_frequency_ms: int = 50
    max_workers: int = 10
    claim_batch_size: int = 64
    lease_duration_seconds: float | None = None
    enable_lock_heartbeat: bool = True
    lock_heartbeat_interval_seconds: float | None = None
    recover_on_start: bool = False
    recovery_interval_seconds: float = 0
    transient_max_attempts: int = 10
    transient_backoff_base_seconds: float = 1.0
    transient_backoff_max_seconds: float = 60.0
    transient_jitter: float = 0.25
    default_poll_seconds: float = 1.0
    stop_on_error: bool = False
    shutdown_timeout_seconds: float = 60.0
    cancel_check_interval_seconds: float = 0.5
    retry_delay: timedelta = timedelta(seconds=1)
    progress_flush_interval_seconds: float = 0.5
    result_gather_ms: float = 0.5
    busy_claim_interval_ms: float = 10.0
    inline_handover_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {self.max_workers}")
        if self.poll_frequency_ms < 1:
            raise ValueError(f"poll_frequency_ms must be at least 1, got {self.poll_frequency_ms}")
        if self.claim_batch_size < 1:
            raise ValueError(f"claim_batch_size must be at least 1, got {self.claim_batch_size}")
        if self.transient_max_attempts < 1:
            raise ValueError("transient_max_attempts must be at least 1")
        if not 0 <= self.transient_jitter < 1:
            raise ValueError("transient_jitter must be in [0, 1)")
        if self.lease_duration_seconds is not None and self.lease_duration_seconds <= 0:
            raise ValueError("lease_duration_seconds must be positive")
        if self.progress_flush_interval_seconds < 0:
            raise ValueError("progress_flush_interval_seconds must be >= 0")
        _check_ms("result_gather_ms", self.result_gather_ms, 1000)
        _check_ms("busy_claim_interval_ms", self.busy_claim_interval_ms, 60_000)
        _check_ms("inline_handover_ms", self.inline_handover_ms, 1000)


def _check_ms(name: str, value: object, most: int) -> None:
    """Refuse a setting in milliseconds that is not a number from 0 to ``most``."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not 0 <= value <= most:  # type: ignore[operator]
        raise ValueError(
            f"{name} must be between 0 and {most}, got {value!r} (a number of milliseconds)"
        )


GATHER_RECENT_FACTOR = 20
"""Tasks that started within this many ``result_gather_ms`` are waited for (see there)."""
GATHER_MAX_FACTOR = 4
"""A finished result waits at most this many ``result_gather_ms`` for others."""
INLINE_MIN_TIMEOUT_FACTOR = 10
"""A task runs on the processor's thread only if its execution timeout (if any) is at
least this many ``inline_handover_ms``: a shorter one would be enforced late."""


def backoff_seconds(config: QueueProcessorConfig, retry: int, jitter_draw: float) -> float:
    """The delay before retry number ``retry`` (1-based): exponential, capped, jittered.

    ``jitter_draw`` is a number in [0, 1) drawn by the caller, so the function stays pure.
    """
    base = config.transient_backoff_base_seconds * (2 ** max(0, retry - 1))
    capped = min(base, config.transient_backoff_max_seconds)
    spread = config.transient_jitter * (2 * jitter_draw - 1)
    return float(max(0.0, capped * (1 + spread)))
