"""Running user code: thread pool for sync tasks, an event loop for async ones."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from stabilize import tracing
from stabilize._json import describe_unencodable, dumps, loads, safe_text
from stabilize.backends._base import Backend
from stabilize.cancellation import CancellationToken, TaskCancelledError
from stabilize.engine.transitions import TaskOutcome
from stabilize.errors import InvalidTaskResultError, TaskTimeoutError, is_transient
from stabilize.logs import bind_task, task_log_context, unbind_task
from stabilize.models.stage import StageExecution
from stabilize.models.status import WorkflowStatus
from stabilize.models.task import TaskExecution
from stabilize.models.workflow import Workflow
from stabilize.queue.processor.config import QueueProcessorConfig, backoff_seconds
from stabilize.records import ClaimedMessage
from stabilize.tasks._database import running_on
from stabilize.tasks.interface import RetryableTask, Task
from stabilize.tasks.result import TaskResult, result_problem

S = WorkflowStatus


@dataclass
class InFlight:
    """A task execution handed to user code, awaiting its result."""

    msg: ClaimedMessage
    task: Task
    stage: StageExecution
    task_id: str
    retry_count: int
    first_start_ms: int
    deadline: float | None = None
    timeout: float | None = None
    abandoned: bool = False
    future: concurrent.futures.Future[Any] | None = None
    started: float = field(default_factory=time.monotonic)
    progress_recorded: int = 0
    """How many of the stage's progress updates are in the event log already."""
    expired: TaskTimeoutError | None = None
    """Set when its overall timeout ran out before it ran: only ``on_timeout`` runs."""
    timing_out: bool = False
    """Abandoned at its deadline; its ``on_timeout`` runs and settles it."""
    cleanup: bool = False
    """Its result ended the task (committed): ``on_cleanup`` runs after the commit."""
    withdrawn: bool = False
    """Taken back before its user code ran (its task ended in the batch that claimed it)."""
    clock: Callable[[], float] = time.time
    """The processor's clock (epoch seconds): the overall timeout is checked by it."""
    claimed_at: float = field(default_factory=time.monotonic)
    started_ns: int = 0
    """Wall clock at the start of user code (set only while tracing is on)."""
    backend: Backend | None = None
    """The processor's database, bound for the task while it runs (see ``task_backend``)."""

    def unrecorded_progress(self) -> list[dict[str, Any]]:
        """Progress updates emitted since the last recorded one (the task only appends)."""
        progress = self.stage._progress
        return progress[self.progress_recorded :] if progress else []


@dataclass
class Finished:
    """What came back from user code: a result or the exception it raised."""

    flight: InFlight
    result: TaskResult | None = None
    error: BaseException | None = None
    tb: str | None = None
    hooked: bool = False
    """The execution timed out (``error``) and ``on_timeout`` ran already: ``result`` is
    what it returned (``None``: the timeout fails the task)."""
    at_ms: int | None = None
    """When the runner checked the overall timeout (the commit checks at the same time)."""
    checked: bool = False
    """``result`` was checked on the task's thread (:func:`result_problem`): the commit,
    on the processor's thread, need not encode it once more."""


def snapshot_stage(wf: Workflow, stage: StageExecution, task: TaskExecution) -> StageExecution:
    """A private copy of ``stage`` for user code, its context merged with its ancestors'.

    The copy is made through JSON so that a task can neither see later changes nor change
    the engine's state behind its back.
    """
    data = loads(
        dumps(
            {
                "context": wf.task_context(stage),
                "outputs": stage.outputs,
                "tasks": [t.to_row() for t in stage.tasks],
                "workflow_context": wf.context,
                "trigger": wf.trigger,
            }
        )
    )
    copy = StageExecution(
        id=stage.id,
        ref_id=stage.ref_id,
        type=stage.type,
        name=stage.name,
        status=stage.status,
        context=data["context"],
        outputs=data["outputs"],
        tasks=[TaskExecution.from_dict(t) for t in data["tasks"]],
        requisite_stage_ref_ids=set(stage.requisite_stage_ref_ids),
        parent_stage_id=stage.parent_stage_id,
        start_time=stage.start_time,
        end_time=stage.end_time,
        version=stage.version,
        loop=replace(stage.loop) if stage.loop is not None else None,
        jump_count=stage.jump_count,
        signal_user=stage.signal_user,
        mi_index=stage.mi_index,
    )
    shell = Workflow(
        id=wf.id,
        type=wf.type,
        application=wf.application,
        name=wf.name,
        status=wf.status,
        context=data["workflow_context"],
        trigger=data["trigger"],
        start_time=wf.start_time,
    )
    copy._workflow = shell
    copy._own_keys = frozenset(stage.context)
    copy._progress = []
    copy._attempt_key = f"{wf.id}:{stage.id}:{task.id}:{task.retry_count}"
    copy._task_id = task.id
    copy._cancel_token = CancellationToken()
    return copy


class Runner:
    """Executes tasks off the processor's thread and reports back through a queue."""

    def __init__(self, max_workers: int, name: str) -> None:
        self.done: queue.SimpleQueue[Finished | None] = queue.SimpleQueue()
        """Finished executions, in the order they finished (``None``: see :meth:`nudge`)."""
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix=f"{name}-task"
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._name = name
        self._lock = threading.Lock()
        self._spares = 0

    def submit(self, flight: InFlight, timeout: timedelta | None) -> None:
        """Start ``flight``; its :class:`Finished` arrives on :attr:`done`."""
        flight.timeout = timeout.total_seconds() if timeout is not None else None
        if _is_async(flight.task) and flight.expired is None:
            loop = self._event_loop()
            seconds = timeout.total_seconds() if timeout is not None else None
            flight.future = asyncio.run_coroutine_threadsafe(self._run_async(flight, seconds), loop)
        else:
            flight.future = self._pool.submit(self._run_sync, flight)

    def run_here(self, flight: InFlight, timeout: timedelta | None) -> None:
        """Run sync ``flight`` on the calling thread; its :class:`Finished` arrives on :attr:`done`.

        For the processor's own thread (see ``_inline``): what the task raises is caught
        and reported like a pool thread's.
        """
        flight.timeout = timeout.total_seconds() if timeout is not None else None
        self._run_sync(flight)

    def nudge(self) -> None:
        """Wake a wait on :attr:`done` with nothing finished (a ``None`` on the queue)."""
        self.done.put(None)

    def cancel(self, flight: InFlight) -> Finished:
        """Ask a running task to stop; return the :class:`Finished` that settles it now.

        The token is set, an async task is cancelled outright, and ``on_cancel`` runs on
        the pool; what the task returns later is dropped.
        """
        token = flight.stage._cancel_token
        if token is not None:
            token.cancel()
        if flight.future is not None and _is_async(flight.task):
            flight.future.cancel()
        self.abandon(flight)
        self._pool.submit(_hook, flight.task.on_cancel, flight)
        name = flight.stage.task_by_id(flight.task_id).name
        error = TaskCancelledError(f"task {name!r} of stage {flight.stage.ref_id!r} was canceled")
        return Finished(flight, error=error)

    def time_out(self, flight: InFlight) -> None:
        """Give up on a sync task past its deadline: ``on_timeout`` settles it on the pool."""
        assert flight.deadline is not None
        error = TaskTimeoutError(_timeout_message(flight, flight.deadline - flight.started))
        self.abandon(flight)  # what the task returns later is dropped
        flight.timing_out = True
        self._pool.submit(self._settle, flight, None, error, None, True)

    def cleanup(self, flight: InFlight) -> None:
        """Run ``on_cleanup`` on the pool, if the task has one (its result is committed)."""
        if type(flight.task).on_cleanup is not Task.on_cleanup:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: skipped
                self._pool.submit(_hook, flight.task.on_cleanup, flight)

    def abandon(self, flight: InFlight) -> None:
        """Stop waiting for a task whose thread cannot be stopped.

        A sync task that overran its timeout or ignores a cancel keeps its thread until it
        returns; the pool gets one more thread meanwhile, so the stuck one cannot starve
        the tasks behind it.
        """
        if flight.abandoned:
            return
        flight.abandoned = True
        if not _is_async(flight.task) and flight.future is not None and flight.future.running():
            with self._lock:
                self._pool._max_workers += 1
                self._spares += 1
            flight.future.add_done_callback(lambda _: self._give_back_spare())

    def _give_back_spare(self) -> None:
        with self._lock:
            if self._spares > 0:
                self._spares -= 1
                self._pool._max_workers -= 1

    def _run_sync(self, flight: InFlight) -> None:
        if flight.expired is not None:  # past its overall timeout: on_timeout only
            self._settle(flight, None, flight.expired)
            return
        # The clock starts when the task does, not when it was queued for a thread.
        flight.started = time.monotonic()
        if flight.timeout is not None:
            flight.deadline = flight.started + flight.timeout
        token = bind_task(task_log_context(flight.msg.workflow_id, flight.stage, flight.task_id))
        try:
            observer = tracing.observer
            if observer is not None:
                observer.task_started(flight)
            try:
                with running_on(flight.backend):
                    value = flight.task.execute(flight.stage)
                    if inspect.isawaitable(value):  # a sync execute that returned a coroutine
                        value = asyncio.run(_await(value))
                result = _check_result(value)
            except BaseException as exc:
                self._settle(flight, None, exc, traceback.format_exc())
                return
            self._settle(flight, result, None)
        finally:
            unbind_task(token)

    def _settle(
        self,
        flight: InFlight,
        result: TaskResult | None,
        error: BaseException | None,
        tb: str | None = None,
        timing_out: bool = False,
    ) -> None:
        """Report what user code did; a timeout first runs ``on_timeout``, here, once.

        The hook is user code: it runs on a task thread, never inside the transaction that
        commits its result.
        """
        if flight.abandoned and not timing_out:
            return  # the engine settled this execution already; the hook ran then
        at_ms = int(flight.clock() * 1000)
        if error is None and result is not None:
            error = _overall_timeout(flight, result, at_ms)
        observer = tracing.observer
        if observer is not None and flight.expired is None:
            status = "ERROR" if error is not None or result is None else result.status.value
            observer.task_finished(flight, status, error)
        if not isinstance(error, TaskTimeoutError):
            checked = result is not None  # it came through _check_result
            self.done.put(
                Finished(flight, result=result, error=error, tb=tb, at_ms=at_ms, checked=checked)
            )
            return
        replacement = _hook(flight.task.on_timeout, flight)
        if not isinstance(replacement, TaskResult):
            replacement = None
        self.done.put(
            Finished(flight, result=replacement, error=error, tb=tb, hooked=True, at_ms=at_ms)
        )

    async def _run_async(self, flight: InFlight, timeout: float | None) -> None:
        result: TaskResult | None = None
        error: BaseException | None = None
        tb: str | None = None
        # This coroutine runs in a context of its own: the binding ends with it.
        bind_task(task_log_context(flight.msg.workflow_id, flight.stage, flight.task_id))
        observer = tracing.observer
        if observer is not None:
            observer.task_started(flight)
        try:
            with running_on(flight.backend):
                value = flight.task.execute(flight.stage)
                if inspect.isawaitable(value):
                    value = await asyncio.wait_for(_await(value), timeout)
            result = _check_result(value)
        except TimeoutError:
            error = TaskTimeoutError(_timeout_message(flight, timeout))
        except asyncio.CancelledError:
            return  # canceled by the engine, which already settled this execution
        except BaseException as exc:
            error, tb = exc, traceback.format_exc()
        if isinstance(error, TaskTimeoutError) or (
            result is not None and result.status is S.RUNNING
        ):
            # on_timeout may run (sync user code): off the event loop.
            await asyncio.to_thread(self._settle, flight, result, error, tb)
        else:
            self._settle(flight, result, error, tb)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name=f"{self._name}-async", daemon=True
                )
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def shutdown(self, wait: bool) -> None:
        """Stop accepting work; with ``wait``, let running sync tasks end first."""
        self._pool.shutdown(wait=wait, cancel_futures=True)
        with self._lock:
            loop, thread = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            if not thread.is_alive():
                with contextlib.suppress(RuntimeError):
                    loop.close()


async def _await(value: Any) -> Any:
    return await value


def _is_async(task: Task) -> bool:
    return inspect.iscoroutinefunction(task.execute)


def runs_here(flight: InFlight) -> bool:
    """Whether :meth:`Runner.run_here` may run ``flight`` (a sync task, not expired)."""
    return flight.expired is None and not _is_async(flight.task)


def _check_result(value: object) -> TaskResult:
    """``value`` if it is a result the engine can store; checked on the task's thread."""
    if not isinstance(value, TaskResult):
        raise InvalidTaskResultError(
            f"execute() returned {type(value).__name__}, expected a TaskResult"
        )
    # Checked again though built checked: a result can be changed after it was built.
    problem = result_problem(value)
    if problem is not None:
        raise InvalidTaskResultError(problem)
    return value


def _timeout_message(flight: InFlight, seconds: float | None) -> str:
    name = flight.stage.task_by_id(flight.task_id).name
    where = f"task {name!r} of stage {flight.stage.ref_id!r}"
    if seconds is None:
        return f"{where} timed out"
    return f"{where} exceeded its timeout of {seconds:g}s"


def _overall_timeout(flight: InFlight, result: TaskResult, now_ms: int) -> TaskTimeoutError | None:
    """The error of a RetryableTask still RUNNING past its overall timeout, else None."""
    task = flight.task
    if result.status is not S.RUNNING or not isinstance(task, RetryableTask):
        return None
    try:
        limit = task.get_dynamic_timeout(flight.stage)
    except Exception:
        return None  # to_outcome reports the failure
    elapsed = timedelta(milliseconds=max(0, now_ms - flight.first_start_ms))
    if elapsed <= limit:
        return None
    name = flight.stage.task_by_id(flight.task_id).name
    return TaskTimeoutError(
        f"task {name!r} of stage {flight.stage.ref_id!r} kept running for "
        f"{elapsed.total_seconds():g}s, beyond its timeout of {limit.total_seconds():g}s"
    )


def to_outcome(
    finished: Finished,
    config: QueueProcessorConfig,
    now_ms: int,
    jitter_draw: Callable[[], float],
) -> TaskOutcome:
    """Turn what user code did into the outcome the pure transition applies.

    Nothing a task returns or raises can make this raise: what cannot be used becomes a
    TERMINAL outcome of that task alone, saying why (#13: one bad result held back every
    workflow of its worker).
    """
    flight = finished.flight
    task_name = flight.stage.task_by_id(flight.task_id).name
    where = f"task {task_name!r} of stage {flight.stage.ref_id!r}"
    try:
        return _to_outcome(finished, config, now_ms, jitter_draw, where)
    except Exception as exc:
        return _failure(f"{where}: its result could not be used: {_describe(exc)}", exc)


def _to_outcome(
    finished: Finished,
    config: QueueProcessorConfig,
    now_ms: int,
    jitter_draw: Callable[[], float],
    where: str,
) -> TaskOutcome:
    flight = finished.flight
    error = finished.error
    if finished.at_ms is not None:
        now_ms = finished.at_ms  # the overall timeout was checked then, by the runner
    if error is not None:
        if isinstance(error, TaskTimeoutError):
            # on_timeout ran on the runner (hooked), never here inside the transaction.
            if finished.hooked and finished.result is not None:
                return _from_result(finished.result, flight, config, now_ms, where)
            return _failure(_describe(error), error, finished.tb)
        if isinstance(error, InvalidTaskResultError):
            return _failure(
                f"{where} returned a result that cannot be stored: {_describe(error)}",
                error,
                finished.tb,
            )
        if is_transient(error):
            attempt = flight.retry_count + 1  # retries so far, counting this one
            if attempt >= config.transient_max_attempts:
                return _failure(
                    f"{where} gave up after {attempt} attempts: {_describe(error)}",
                    error,
                    finished.tb,
                )
            retry_after = getattr(error, "retry_after", None)
            delay = (
                float(retry_after)
                if retry_after is not None
                else backoff_seconds(config, attempt, jitter_draw())
            )
            context_update = getattr(error, "context_update", None) or {}
            if not isinstance(context_update, dict):
                problem: str | None = (
                    f"context_update must be a dict, not a {type(context_update).__name__}"
                )
            else:
                problem = describe_unencodable(context_update, "context_update")
            state, state_problem = _error_state(error)
            problem = problem or state_problem
            if problem is not None:
                return _failure(f"{where} raised {type(error).__name__}: {problem}", error)
            return TaskOutcome(
                S.RUNNING,
                context=dict(context_update),
                state=state,
                retry=True,
                delay_ms=int(delay * 1000),
                error=_describe(error),
                error_details=_details(error, finished.tb),
            )
        return _failure(
            f"{where} failed: {type(error).__name__}: {_describe(error)}", error, finished.tb
        )
    assert finished.result is not None
    return _from_result(finished.result, flight, config, now_ms, where, finished.checked)


def _from_result(
    result: TaskResult,
    flight: InFlight,
    config: QueueProcessorConfig,
    now_ms: int,
    where: str,
    checked: bool = False,
) -> TaskOutcome:
    problem = None if checked else result_problem(result)
    if problem is not None:
        return _failure(
            f"{where} returned a result that cannot be stored: {problem}",
            InvalidTaskResultError(problem),
        )
    if result.status is S.RUNNING:
        stage = flight.stage
        stage.context.update(result.context)
        if result.state is not None:  # the backoff below may read it (a wait's deadline)
            stage.task_by_id(flight.task_id).state = dict(result.state)
        elapsed = timedelta(milliseconds=max(0, now_ms - flight.first_start_ms))
        task = flight.task
        if isinstance(task, RetryableTask):
            limit = task.get_dynamic_timeout(stage)
            if elapsed > limit:
                return _failure(
                    f"{where} kept running for {elapsed.total_seconds():g}s, beyond its "
                    f"timeout of {limit.total_seconds():g}s",
                    TaskTimeoutError("timeout"),
                )
            delay = task.get_dynamic_backoff_period(stage, elapsed).total_seconds()
        else:
            delay = config.default_poll_seconds
        return TaskOutcome(
            S.RUNNING,
            context=dict(result.context),
            delay_ms=int(delay * 1000),
            state=_copy(result.state),
        )
    error = None if result.error is None else safe_text(str(result.error))
    if result.status.is_failure and error is None:
        error = f"{where} ended {result.status.value}"
    return TaskOutcome(
        result.status,
        context=dict(result.context),
        outputs=dict(result.outputs),
        target_stage_ref_id=result.target_stage_ref_id,
        error=error,
        state=_copy(result.state),
        signal_timeout=result.signal_timeout,
    )


def _copy(state: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if state is None else dict(state)


def _error_state(error: BaseException) -> tuple[dict[str, Any] | None, str | None]:
    """The ``state`` a transient error carries, and what makes it unusable (or None)."""
    state = getattr(error, "state", None)
    if state is None:
        return None, None
    if not isinstance(state, dict):
        return None, f"state must be a dict, not a {type(state).__name__}"
    return dict(state), describe_unencodable(state, "state")


def _failure(message: str, error: BaseException, tb: str | None = None) -> TaskOutcome:
    message = safe_text(message)
    return TaskOutcome(S.TERMINAL, error=message, error_details=_details(error, tb, message))


def _details(error: BaseException, tb: str | None, message: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {
        "exception_type": safe_text(type(error).__name__),
        "message": message or _describe(error),
    }
    if tb:
        details["traceback"] = safe_text(tb[-4000:])
    return details


def _describe(error: BaseException) -> str:
    """``str(error)``, storable whatever the exception holds (or if its ``__str__`` fails)."""
    try:
        return safe_text(str(error))
    except Exception:
        return f"<{type(error).__name__} whose message could not be read>"


def _hook(fn: Callable[[StageExecution], TaskResult | None], flight: InFlight) -> Any:
    try:
        with running_on(flight.backend):
            return fn(flight.stage)
    except Exception:
        return None
