"""The queue processor: claims messages, runs tasks, commits their results."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
import weakref
from collections.abc import Callable
from datetime import timedelta
from queue import Empty
from typing import Any

from stabilize import tracing
from stabilize.backends._base import Transaction
from stabilize.cancellation import TaskCancelledError
from stabilize.engine.transitions import (
    TaskOutcome,
    cancel_workflow,
    complete_task,
    fail_workflow,
    mutex_granted,
    prepare_task,
    signal_timeout,
    stage_deadline,
    start_workflow,
)
from stabilize.errors import StabilizeError, TaskTimeoutError
from stabilize.message_kinds import (
    ACQUIRE_MUTEX,
    INLINE_KINDS,
    RELEASE_MUTEX,
    RUN_TASK,
    SIGNAL_TIMEOUT,
    STAGE_DEADLINE,
    START_WORKFLOW,
)
from stabilize.models.event import EventType
from stabilize.models.status import WorkflowStatus
from stabilize.models.workflow import Workflow
from stabilize.persistence.store import WorkflowStore
from stabilize.queue.processor._batch import Batch, message_run
from stabilize.queue.processor._drain import Drainer, DrainRun
from stabilize.queue.processor._inline import InlineRuns
from stabilize.queue.processor._isolation import commit_apart
from stabilize.queue.processor._recovery import new_owner, owner_is_dead
from stabilize.queue.processor._result import ProcessResult
from stabilize.queue.processor._runner import (
    Finished,
    InFlight,
    Runner,
    snapshot_stage,
    to_outcome,
)
from stabilize.queue.processor.config import (
    GATHER_MAX_FACTOR,
    GATHER_RECENT_FACTOR,
    QueueProcessorConfig,
)
from stabilize.queue.queue import Queue
from stabilize.records import ClaimedMessage, Effects, EventDraft, Message
from stabilize.recovery import WorkflowRecovery
from stabilize.tasks.interface import RetryableTask
from stabilize.tasks.registry import TaskRegistry

log = logging.getLogger("stabilize.processor")

_live: weakref.WeakSet[QueueProcessor] = weakref.WeakSet()


class QueueProcessor:
    """Drains a queue: runs each task and commits its result with what follows from it.

    Every commit holds the new state, the messages that continue the workflow, the
    acknowledgement of the consumed message and (when recording) the events, in one
    transaction fenced by the message's lease. User code runs between commits.

    Args:
        queue: The queue to drain; its database is the store's.
        config: Settings (defaults: :class:`QueueProcessorConfig`).
        store: The workflow store (must share the queue's database).
        handler_config: Accepted for compatibility; unused.
        task_registry: Where ``implementing_class`` names are looked up.
        bulkhead_manager: Accepted for compatibility with the original; unused.
        circuit_factory: Accepted for compatibility with the original; unused.
        clock: Seconds since the epoch (injectable for tests).

    Raises:
        ValueError: ``store`` and ``queue`` use different databases.
    """

    def __init__(
        self,
        queue: Queue,
        config: QueueProcessorConfig | None = None,
        store: WorkflowStore | None = None,
        handler_config: Any = None,
        task_registry: TaskRegistry | None = None,
        bulkhead_manager: Any = None,
        circuit_factory: Any = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if store is not None and store.backend is not queue.backend:
            raise ValueError(
                "the store and the queue must use the same database so that state and "
                f"messages commit together (store: {store.backend.location}, "
                f"queue: {queue.backend.location})"
            )
        self.queue = queue
        self.store = store
        self.backend = queue.backend
        self.config = config or QueueProcessorConfig()
        self.task_registry = task_registry or TaskRegistry()
        self.backend.registries.add(self.task_registry)
        self.owner = new_owner()
        self._clock = clock
        self._random = random.Random()
        lease = self.config.lease_duration_seconds
        self.lease_ms = int(1000 * (lease or queue.lock_duration.total_seconds()))
        heartbeat = self.config.lock_heartbeat_interval_seconds
        self._heartbeat_s = heartbeat if heartbeat else self.lease_ms / 3000
        self._runner: Runner | None = None
        self._inflight: dict[int, InFlight] = {}
        self._retry: list[Finished] = []
        self._last_heartbeat = time.monotonic()
        self._last_progress_flush = time.monotonic()
        self._last_recovery = time.monotonic()
        self._last_cancel_check = time.monotonic()
        self._recovered = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._stepping = threading.Lock()
        """Held through each step (never while a task runs): one thread steps at a time."""
        self._acked = 0
        """Messages acknowledged by every step so far (``process_all`` counts from it)."""
        self._drainer = Drainer(self)
        self._inline_runs = InlineRuns(self)
        self._stopping = False
        self.commits = 0
        self.claims_skipped = 0
        """Claims left out because the processor was busy and had found the queue empty
        (see ``QueueProcessorConfig.busy_claim_interval_ms``)."""
        self._found_empty: tuple[int, int] | None = None
        """(processor-clock ms, ``backend.claimable_commits``) just before the last claim,
        when it took every message it could (it came back short); None otherwise."""
        _live.add(self)
        tracing.track_queue(self)

    # -- public API -----------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """True while the background loop started by :meth:`start` runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def is_stopping(self) -> bool:
        """True after :meth:`stop` was requested, until the loop has ended."""
        return self._stopping

    @property
    def active_count(self) -> int:
        """Tasks running now."""
        return sum(1 for f in self._inflight.values() if not f.abandoned)

    def process_all(self, timeout: float = 60.0) -> ProcessResult:
        """Process until the queue is empty and no task runs, or ``timeout`` seconds pass.

        Delayed messages (retries, polls, waits) are waited for while the timeout allows;
        it returns at once when the only work left is due after the timeout (a suspended
        approval's timer, say).

        The loop runs on a thread of its own (``stabilize-process-all``), which runs a
        chain's next sync task itself, as :meth:`start` does (see
        ``QueueProcessorConfig.inline_handover_ms``); the caller waits. It returns at the
        timeout even while a task runs: that task finishes on its own and the next call
        commits its result.

        Args:
            timeout: The most seconds to work.

        Returns:
            The number of messages processed, an ``int`` that also says what was left:
            ``result.finished`` is False when messages were still queued or tasks still
            running, and ``result.timed_out`` is True when the timeout ran out while work
            was ready (see :class:`ProcessResult`).

        Raises:
            TypeError: ``timeout`` is not a number of seconds.
            ValueError: ``timeout`` is NaN.
            RuntimeError: the background loop of :meth:`start` is running, or another
                call of ``process_all`` is (from a task it runs, say).
            Exception: an error of the database that retrying does not cure.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(
                f"process_all(timeout=...) takes a number of seconds, got {timeout!r} "
                f"({type(timeout).__name__})"
            )
        if math.isnan(timeout):
            raise ValueError("process_all(timeout=nan): give a number of seconds (inf: no limit)")
        if self.is_running:
            raise RuntimeError("process_all() cannot run while start() is running")
        if self._drainer.busy:
            raise RuntimeError(
                "process_all() is already running (called from a task it runs, or from "
                "two threads at once)"
            )
        with self._stepping:
            self._maybe_recover(force=not self._recovered)
        return self._drainer.process_all(timeout)

    def _result(self, processed: int, *, timed_out: bool) -> ProcessResult:
        """The result of a call that ends now, counting what is left."""
        try:
            pending = self._queue_depth()[0]
        except Exception as exc:
            if not self.backend.is_transient_error(exc):
                raise
            pending = 0  # a busy database must not turn a timeout into an error
        running = self.active_count
        return ProcessResult(
            processed,
            pending=pending,
            running=running,
            timed_out=timed_out and bool(pending or running),
        )

    def process_one(self) -> bool:
        """Run one step without waiting; return True if a message was processed or claimed."""
        done, claimed = self._step(0)
        return bool(done or claimed)

    def start(self) -> None:
        """Run in a background thread until :meth:`stop`.

        Raises:
            RuntimeError: a call of :meth:`process_all` is under way.
        """
        if self.is_running:
            return
        if self._drainer.busy:
            raise RuntimeError("start() cannot run while process_all() runs")
        self._stop.clear()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="stabilize-processor", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the background loop to stop claiming work and end after running tasks."""
        self._stopping = True
        self._stop.set()
        self.backend.wake_waiters()

    def stop(self, wait: bool = True, timeout: float | None = None) -> int:
        """Stop the background loop; running tasks finish and commit first.

        Args:
            wait: Wait for the loop to end.
            timeout: The most seconds to wait (default: ``shutdown_timeout_seconds``).

        Returns:
            The number of tasks still running when it returned.
        """
        self.request_stop()
        thread = self._thread
        # From a task run on the loop's own thread, the loop ends after that task returns.
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.config.shutdown_timeout_seconds)
        still = self.active_count
        if thread is None or not thread.is_alive():
            self._thread = None
            self._stopping = False
            self._stop.clear()
            self._shutdown_runner(wait=False)
        return still

    def run_recovery(self) -> int:
        """Release the leases of dead workers on this host; return how many were released."""
        now = self._now_ms()
        live = {p.owner for p in list(_live)}
        released = 0
        with self.backend.transaction() as tx:
            for owner in tx.lease_owners(now):
                if owner_is_dead(owner, live):
                    count = tx.release_owner(owner)
                    released += count
                    log.warning("recovered %d message(s) leased by dead worker %s", count, owner)
        self._last_recovery = time.monotonic()
        self._recovered = True
        return released

    # -- the loop -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._maybe_recover(force=True)
        except Exception:
            log.exception("recovery on start failed")
        poll = self.config.poll_frequency_ms / 1000
        while not self._stop.is_set():
            try:
                _, claimed = self._step(poll)
            except Exception as exc:
                if self.backend.is_transient_error(exc):
                    # Lost connection, deadlock, server restart: finished results are kept
                    # in memory and committed on the next step.
                    log.warning("database error, retrying: %s", exc)
                else:
                    log.exception("processor step failed")
                    if self.config.stop_on_error:
                        break
                self._stop.wait(self.config.retry_delay.total_seconds())
                continue
            # A step that only settled results (a workflow ended) and left nothing running
            # waits too: work enqueued meanwhile ends the wait at once (a kept local wake
            # or data_version on SQLite, the wait's reservation on PostgreSQL).
            if not (claimed or self._inflight):
                self.backend.wait_for_work(poll, self._stop)
        # Graceful drain: commit what is running, claim nothing new.
        drain_until = time.monotonic() + self.config.shutdown_timeout_seconds
        while self.active_count and time.monotonic() < drain_until:
            try:
                self._step(poll, claim=False)
            except Exception as exc:
                if not self.backend.is_transient_error(exc):
                    log.exception("processor step failed while stopping")
                    break
                log.warning("database error while stopping, retrying: %s", exc)
                time.sleep(self.config.retry_delay.total_seconds())
        self._shutdown_runner(wait=False)

    def _step(
        self, block: float, claim: bool = True, run: DrainRun | None = None
    ) -> tuple[int, int]:
        """Commit finished tasks, claim new work and dispatch it; return (acked, claimed).

        A task the step keeps for this thread runs after the step, outside the step lock.
        For a ``process_all`` ``run``, nothing is done once the run is abandoned.
        """
        with self._stepping:
            if run is not None and run.abandoned:
                return 0, 0
            done, claimed, here = self._step_locked(block, claim)
            self._acked += done
        if here is not None:
            self._inline_runs.run_here(*here, run)
        return done, claimed

    def _step_locked(
        self, block: float, claim: bool
    ) -> tuple[int, int, tuple[InFlight, timedelta | None] | None]:
        finished = self._collect(block)
        # A stop requested while we waited must not let this step claim new work.
        claim = claim and not self._stop.is_set()
        live = sum(1 for f in self._inflight.values() if not f.abandoned)
        capacity = self.config.max_workers - live + len(finished) if claim else 0
        if not finished and capacity <= 0:
            self._maybe_heartbeat()
            self._maybe_flush_progress()
            return 0, 0, None
        now = self._now_ms()
        try:
            done, dispatch = self._commit(finished, max(0, capacity), now)
        except Exception as exc:
            if self.backend.is_transient_error(exc):
                self._retry = finished + self._retry
                raise
            done, dispatch = commit_apart(self, finished, max(0, capacity), now, exc)
        for item in finished:
            self._inflight.pop(item.flight.msg.id, None)
            if item.flight.cleanup:
                self._ensure_runner().cleanup(item.flight)
        for flight, _ in dispatch:
            self._inflight[flight.msg.id] = flight
        try:
            self._maybe_heartbeat()
            self._maybe_flush_progress()
            self._maybe_recover()
        except BaseException:
            for flight, timeout in dispatch:  # claimed and committed: they must run
                self._ensure_runner().submit(flight, timeout)
            raise
        here = self._inline_runs.choose(dispatch)
        for flight, timeout in dispatch:
            if here is None or flight is not here[0]:
                self._ensure_runner().submit(flight, timeout)
        return done, len(dispatch), here

    def _collect(self, block: float) -> list[Finished]:
        # The cancellation check reads the database and may fail: results held for a
        # retry are taken only after it, or a failed read would lose them for good.
        canceled = self._check_cancellations()
        finished, self._retry = self._retry, []
        finished.extend(canceled)
        mono = time.monotonic()
        for flight in self._inflight.values():
            if flight.deadline is not None and not flight.abandoned and mono > flight.deadline:
                self._ensure_runner().time_out(flight)  # on_timeout settles it on the pool
        runner = self._runner
        if runner is None:
            return finished
        live = any(not f.abandoned or f.timing_out for f in self._inflight.values())
        wait = block if live and not finished else 0
        deadlines = [f.deadline for f in self._inflight.values() if f.deadline and not f.abandoned]
        if deadlines:
            wait = min(wait, max(0.0, min(deadlines) - mono))
        try:
            item = runner.done.get(timeout=wait) if wait > 0 else runner.done.get_nowait()
        except Exception:
            return finished
        items = [item]
        while True:
            try:
                items.append(runner.done.get_nowait())
            except Exception:
                break
        if self.config.result_gather_ms > 0:
            self._gather(runner, items)
        for got in items:
            if got is None:  # a nudge (see Runner.nudge)
                continue
            current = self._inflight.get(got.flight.msg.id)
            if current is got.flight and (not got.flight.abandoned or got.hooked):
                finished.append(got)
        return finished

    def _gather(self, runner: Runner, items: list[Finished | None]) -> None:
        """Wait briefly for the results of tasks that started together with ``items``.

        Results that arrive within ``result_gather_ms`` of each other share one commit:
        the cost of a transaction (its begin, its commit, the pages it writes, a round
        trip on PostgreSQL) is paid once for them. Only tasks that started recently are
        waited for; a long task (a model call, a human) costs the others nothing.
        """
        gap = self.config.result_gather_ms / 1000
        now = time.monotonic()
        recent = now - GATHER_RECENT_FACTOR * gap
        got = {id(item.flight) for item in items if item is not None}
        waiting = sum(
            1
            for f in self._inflight.values()
            if not f.abandoned and f.started >= recent and id(f) not in got
        )
        until = now + GATHER_MAX_FACTOR * gap
        while waiting > 0:
            left = until - time.monotonic()
            if left <= 0:
                return
            try:
                items.append(runner.done.get(timeout=min(gap, left)))
            except Empty:
                return
            waiting -= 1

    def _commit(
        self,
        finished: list[Finished],
        capacity: int,
        now: int,
        claimed: list[ClaimedMessage] | None = None,
    ) -> tuple[int, list[tuple[InFlight, timedelta | None]]]:
        """Run one transaction of the loop.

        It commits finished results, claims due work (or takes the messages ``claimed``
        already) and settles what needs no user code. Returns the number of messages
        acknowledged and the executions to dispatch.
        """
        observer = tracing.observer
        started_ns = time.time_ns() if observer is not None else 0
        with self.backend.transaction() as tx:
            batch = Batch(tx, self.owner, self.lease_ms, capacity, now)
            if observer is not None:
                batch.ends = []
            acked = tx.ack_many([item.flight.msg for item in finished], self.owner)
            for item in finished:
                self._commit_result(batch, item, item.flight.msg.id in acked)
            budget = capacity - len(batch.pending)
            if claimed is None and budget > 0:
                if self._skip_claim(batch, now):
                    self.claims_skipped += 1
                else:
                    asked = min(budget, self.config.claim_batch_size)
                    seen = self.backend.claimable_commits
                    claimed = tx.claim(self.owner, now, now + self.lease_ms, asked)
                    self._found_empty = (now, seen) if len(claimed) < asked else None
            if claimed:
                # Messages settled here are acknowledged together (claimed just now, so
                # their leases hold).
                tx.ack_many([m for m in claimed if m.kind in INLINE_KINDS], self.owner)
                batch.pending.extend(claimed)
            while batch.next < len(batch.pending):
                msg = batch.pending[batch.next]
                batch.next += 1
                if msg.kind == RUN_TASK:
                    flight = self._prepare(batch, msg)
                    if flight is not None:
                        batch.dispatch.append(flight)
                        continue
                elif msg.kind in (ACQUIRE_MUTEX, RELEASE_MUTEX):
                    self._mutex(batch, msg)
                elif msg.kind in INLINE_KINDS:
                    self._inline(batch, msg)
                else:
                    tx.dead_letter(msg, f"unknown message kind {msg.kind!r}", now)
                    if observer is not None:
                        observer.dead_lettered(msg.kind)
                batch.done += 1
            if batch.dispatch:
                batch.dispatch = self._still_running(tx, batch.dispatch)
        self.commits += 1
        if observer is not None and batch.ends is not None and (batch.done or batch.dispatch):
            observer.committed(started_ns, batch.done, len(batch.dispatch), batch.ends)
        return batch.done, batch.dispatch

    def _skip_claim(self, batch: Batch, now: int) -> bool:
        """Whether this step may leave the claim out (``busy_claim_interval_ms``).

        Only when the step already holds a task to run (so the processor stays busy and
        steps again soon), its last claim came back short less than the interval ago,
        and no commit of this process has left work to claim since. A claim that came
        back short took every message that was due and free; only work of other
        processes and the passing of time can have made more claimable since.
        """
        found = self._found_empty
        if found is None or not any(m.kind == RUN_TASK for m in batch.pending):
            return False
        at, seen = found
        return (
            0 <= now - at < self.config.busy_claim_interval_ms
            and self.backend.claimable_commits == seen
        )

    def _still_running(
        self, tx: Transaction, dispatch: list[tuple[InFlight, timedelta | None]]
    ) -> list[tuple[InFlight, timedelta | None]]:
        """The executions of ``dispatch`` whose task is still RUNNING as the batch ends.

        A later message of the same batch (a stage deadline, a cancellation) can end a task
        dispatched earlier in it: its user code must not run (found by the simulation,
        seeds 14 and 37). The others are settled with the next step, as canceled runs
        whose completion is stale.
        """
        keep: list[tuple[InFlight, timedelta | None]] = []
        for flight, timeout in dispatch:
            wf = tx.touched.get(flight.msg.workflow_id)
            stage = wf.index.by_id.get(flight.stage.id) if wf is not None else None
            task = next((t for t in stage.tasks if t.id == flight.task_id), None) if stage else None
            run = message_run(flight.msg)
            if (
                task is not None
                and task.status is WorkflowStatus.RUNNING
                and (run is None or task.version == run)
            ):
                keep.append((flight, timeout))
                continue
            flight.withdrawn = True
            where = f"stage {flight.stage.ref_id!r}"
            error = TaskCancelledError(f"a task of {where} ended before it could start")
            self._retry.append(Finished(flight, error=error))
        return keep

    def _commit_result(self, batch: Batch, item: Finished, acked: bool) -> None:
        """Apply a finished task's result whose message was acknowledged (``acked``)."""
        msg = item.flight.msg
        outcome = to_outcome(item, self.config, batch.now, self._random.random)
        if not acked:
            # Its workflow ended (and dropped it) or another worker adopted it.
            log.info("message %s is no longer leased to us; result dropped", msg.id)
            return
        batch.done += 1
        item.flight.cleanup = (
            outcome.status is not WorkflowStatus.RUNNING and not item.flight.withdrawn
        )
        observer = tracing.observer
        if outcome.retry and observer is not None:
            task = item.flight.stage.task_by_id(item.flight.task_id)
            observer.retried(task.implementing_class)
        wf = batch.tx.workflow(msg.workflow_id)
        if wf is None:
            return
        fx = complete_task(
            wf, msg.stage_id or "", msg.task_id or "", outcome, batch.now, message_run(msg)
        )
        progress = item.flight.unrecorded_progress()
        if progress and not fx.stale:
            stage_id = item.flight.stage.id
            fx.events[:0] = [_progress_event(stage_id, p) for p in progress]
        batch.save(wf, fx)

    def _inline(self, batch: Batch, msg: ClaimedMessage) -> None:
        """Apply a message (acknowledged) whose transition needs no user code, here."""
        wf = batch.tx.workflow(msg.workflow_id)
        if wf is None:
            return
        now = batch.now
        if msg.kind == START_WORKFLOW:
            missing = self._unknown_task(wf)
            if missing is not None:
                error, stage_id, task_id = missing
                batch.save(wf, fail_workflow(wf, error, now, stage_id=stage_id, task_id=task_id))
            else:
                batch.save(wf, start_workflow(wf, now))
        elif msg.kind == STAGE_DEADLINE:
            started = msg.payload.get("started")
            if isinstance(started, int):
                batch.save(wf, stage_deadline(wf, msg.stage_id or "", started, now))
        elif msg.kind == SIGNAL_TIMEOUT:
            run = message_run(msg)
            if run is not None:
                fx = signal_timeout(wf, msg.stage_id or "", msg.task_id or "", run, now)
                batch.save(wf, fx)
        else:
            user, why = msg.payload.get("user"), msg.payload.get("reason")
            batch.save(wf, cancel_workflow(wf, user, why, now))

    def _mutex(self, batch: Batch, msg: ClaimedMessage) -> None:
        """Take or give back a ``mutex_key`` (the lock table lives beside the queue)."""
        tx, now = batch.tx, batch.now
        tx.ack(msg, self.owner)
        key = str(msg.payload.get("key"))
        stage_id = msg.stage_id or ""
        if msg.kind == RELEASE_MUTEX:
            waiter = tx.release_mutex(key, stage_id)
            if waiter is not None:
                batch.enqueue([Message(ACQUIRE_MUTEX, waiter[0], waiter[1], payload={"key": key})])
            return
        if not tx.acquire_mutex(key, msg.workflow_id, stage_id, now):
            return
        wf = tx.workflow(msg.workflow_id)
        if wf is None:
            batch.enqueue([Message(RELEASE_MUTEX, msg.workflow_id, stage_id, payload={"key": key})])
        else:
            batch.save(wf, mutex_granted(wf, stage_id, now))

    def _unknown_task(self, wf: Workflow) -> tuple[str, str, str] | None:
        """(error, stage id, task id) of the first task no registry here knows, if any."""
        for stage in wf.stages:
            for task in stage.tasks:
                if not self.task_registry.has(task.implementing_class):
                    known = ", ".join(self.task_registry.names())
                    error = (
                        f"stage {stage.ref_id!r}: no task registered as "
                        f"{task.implementing_class!r} on this worker (registered: {known})"
                    )
                    return error, stage.id, task.id
        return None

    def _prepare(
        self, batch: Batch, msg: ClaimedMessage
    ) -> tuple[InFlight, timedelta | None] | None:
        """Check a claimed RunTask; return what to dispatch, or None if settled here."""
        tx, now = batch.tx, batch.now
        wf = tx.workflow(msg.workflow_id)
        if wf is None:
            tx.delete_message(msg.id)
            return None
        stage_id, task_id = msg.stage_id or "", msg.task_id or ""
        if msg.attempts > self.queue.max_attempts:
            reason = (
                f"message delivered {msg.attempts} times without completing "
                f"(max_attempts={self.queue.max_attempts}); its worker may keep crashing"
            )
            tx.dead_letter(msg, reason, now)
            observer = tracing.observer
            if observer is not None:
                observer.dead_lettered(msg.kind)
            outcome = TaskOutcome(WorkflowStatus.TERMINAL, error=reason)
            batch.save(wf, complete_task(wf, stage_id, task_id, outcome, now, message_run(msg)))
            return None
        parked = prepare_task(wf, stage_id, task_id, now, message_run(msg))
        if parked is not None:
            tx.ack(msg, self.owner)
            batch.save(wf, parked)
            return None
        stage = wf.stage_by_id(stage_id)
        task = stage.task_by_id(task_id)
        try:
            impl = self.task_registry.get(task.implementing_class)
        except (StabilizeError, TypeError) as exc:
            self._settle(batch, wf, msg, str(exc))
            return None
        snapshot = snapshot_stage(wf, stage, task)
        # For tasks that start workflows (SubWorkflowTask): the clock that stamps what they
        # queue, and (bound while the task runs) the database.
        snapshot._clock = self._clock
        first_start = task.start_time if task.start_time is not None else now
        flight = InFlight(msg, impl, snapshot, task_id, task.retry_count, first_start)
        flight.clock = self._clock
        flight.backend = self.backend
        if isinstance(impl, RetryableTask):
            limit = impl.get_dynamic_timeout(snapshot).total_seconds() * 1000
            if now - first_start > limit:
                # Dispatched all the same: its on_timeout (user code) runs on the pool,
                # outside this transaction, and its result settles the task.
                flight.expired = TaskTimeoutError(
                    f"task {task.name!r} of stage {stage.ref_id!r} exceeded its timeout of "
                    f"{limit / 1000:g}s"
                )
                return flight, None
        return flight, impl.get_execution_timeout(snapshot)

    def _settle(self, batch: Batch, wf: Workflow, msg: ClaimedMessage, error: str) -> None:
        """Fail a claimed task without running it."""
        batch.tx.ack(msg, self.owner)
        outcome = TaskOutcome(WorkflowStatus.TERMINAL, error=error)
        fx = complete_task(
            wf, msg.stage_id or "", msg.task_id or "", outcome, batch.now, message_run(msg)
        )
        batch.save(wf, fx)

    # -- housekeeping ---------------------------------------------------------------

    def _check_cancellations(self) -> list[Finished]:
        """Settle running tasks whose task the database no longer shows as RUNNING."""
        interval = self.config.cancel_check_interval_seconds
        live = [f for f in self._inflight.values() if not f.abandoned]
        if not live or time.monotonic() - self._last_cancel_check < interval:
            return []
        self._last_cancel_check = time.monotonic()
        canceled: list[InFlight] = []
        with self.backend.read() as tx:
            # The stages' rows alone, all in one read: loading (and indexing) the whole
            # workflow here cost O(stages) per check and stalled wide workflows (issue 13).
            stages = tx.read_stages([flight.stage.id for flight in live])
            for flight in live:
                stage = stages.get(flight.stage.id)
                task = (
                    next((t for t in stage.tasks if t.id == flight.task_id), None)
                    if stage
                    else None
                )
                run = message_run(flight.msg)
                if (
                    task is None
                    or task.status is not WorkflowStatus.RUNNING
                    or (run is not None and task.version != run)
                ):
                    canceled.append(flight)
        runner = self._ensure_runner()
        return [runner.cancel(flight) for flight in canceled]

    def _maybe_heartbeat(self) -> None:
        if not self.config.enable_lock_heartbeat or not self._inflight:
            return
        if time.monotonic() - self._last_heartbeat < self._heartbeat_s:
            return
        self._last_heartbeat = time.monotonic()
        now = self._now_ms()
        leases = [(f.msg.id, f.msg.lease_token) for f in self._inflight.values()]
        with self.backend.transaction() as tx:
            lost = tx.extend_leases(self.owner, leases, now + self.lease_ms)
        self.commits += 1
        for msg_id in lost:
            log.warning("lease of message %s was taken over by another worker", msg_id)

    def _maybe_flush_progress(self) -> None:
        """Record the progress updates of running tasks, all in one commit, now and then.

        Each task's updates are appended only while this worker still holds its lease (the
        lease is renewed in the same transaction); the rest are recorded with its result.
        """
        interval = self.config.progress_flush_interval_seconds
        if interval <= 0 or time.monotonic() - self._last_progress_flush < interval:
            return
        self._last_progress_flush = time.monotonic()
        pending = [
            (flight, updates)
            for flight in self._inflight.values()
            if not flight.abandoned and (updates := flight.unrecorded_progress())
        ]
        if not pending:
            return
        if self.backend.event_table_prefix() is None:
            return  # not recording: the updates went to live listeners only
        try:
            self._flush_progress(pending)
        except Exception as exc:
            if self.backend.is_transient_error(exc):
                raise
            # Retrying would fail the same way at every step: the updates are dropped
            # (live listeners saw them) and the tasks' results are committed as usual.
            log.error("progress updates could not be recorded and are dropped: %s", exc)
            for flight, updates in pending:
                flight.progress_recorded += len(updates)

    def _flush_progress(self, pending: list[tuple[InFlight, list[dict[str, Any]]]]) -> None:
        now = self._now_ms()
        recorded: list[tuple[InFlight, int]] = []
        with self.backend.transaction() as tx:
            for flight, updates in pending:
                msg = flight.msg
                lease = [(msg.id, msg.lease_token)]
                if tx.extend_leases(self.owner, lease, now + self.lease_ms):
                    continue  # lost: the execution's updates die with it
                wf = tx.workflow(msg.workflow_id)
                if wf is None:
                    continue
                fx = Effects()
                fx.events = [_progress_event(flight.stage.id, u) for u in updates]
                tx.save(wf, fx, now)
                recorded.append((flight, len(updates)))
        self.commits += 1
        for flight, count in recorded:
            flight.progress_recorded += count

    def _maybe_recover(self, force: bool = False) -> None:
        interval = self.config.recovery_interval_seconds
        due = interval > 0 and time.monotonic() - self._last_recovery >= interval
        if (force and self.config.recover_on_start) or due:
            self.run_recovery()
            if force and self.store is not None:
                # Workflows whose messages are gone altogether (the README's promise).
                recovery = WorkflowRecovery(self.store, self.queue, clock=self._clock)
                recovery.recover_pending_workflows()

    def _queue_depth(self) -> tuple[int, int | None]:
        with self.backend.read() as tx:
            return tx.queue_depth()

    def _ensure_runner(self) -> Runner:
        if self._runner is None:
            self._runner = Runner(self.config.max_workers, "stabilize")
        return self._runner

    def _shutdown_runner(self, wait: bool) -> None:
        self._inline_runs.close_handover()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.shutdown(wait=wait)

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def __del__(self) -> None:
        runner = getattr(self, "_runner", None)
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.shutdown(wait=False)


def _progress_event(stage_id: str, update: dict[str, Any]) -> EventDraft:
    return EventDraft(EventType.CUSTOM_PROGRESS.value, "stage", stage_id, update)
