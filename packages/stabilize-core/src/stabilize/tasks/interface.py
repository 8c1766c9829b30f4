"""The task interface user code implements, and the small built-in tasks."""

from __future__ import annotations

import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from stabilize.models.stage import StageExecution
from stabilize.tasks.result import TaskResult

TaskOutcome = TaskResult | Awaitable[TaskResult]


class Task(ABC):
    """A unit of user code. Implement ``execute`` (plain or ``async def``).

    ``execute`` receives a private copy of the stage whose ``context`` already holds the
    outputs of every ancestor stage under the stage's own keys. Return a
    :class:`TaskResult`, or raise :class:`~stabilize.errors.TransientError` to be retried.

    Attributes:
        timeout: Seconds one execution may take before it fails with a timeout error
            (``None``: no limit).
    """

    timeout: float | None = None

    @abstractmethod
    def execute(self, stage: StageExecution) -> TaskOutcome:
        """Run the task for ``stage`` and say how it went.

        Args:
            stage: A private copy of the stage; its ``context`` holds the ancestors'
                outputs.

        Returns:
            A :class:`TaskResult` (or, from ``async def execute``, an awaitable of one).

        Raises:
            TransientError: Raise it (or `TimeoutError`, `ConnectionError`) to be
                retried; any other exception fails the task TERMINAL.
        """

    def get_execution_timeout(self, stage: StageExecution) -> timedelta | None:
        """The limit for one execution (defaults to :attr:`timeout`).

        Args:
            stage: The stage about to run.

        Returns:
            The limit, or None for none.
        """
        return timedelta(seconds=self.timeout) if self.timeout is not None else None

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        """Called once when the task timed out; the result it returns decides the task.

        It runs for an execution that exceeded :meth:`get_execution_timeout`, and for a
        :class:`RetryableTask` past its overall :meth:`~RetryableTask.get_dynamic_timeout`
        (still returning ``running()``, or due again after the limit). It runs on a task
        thread, outside any transaction. Return ``None`` (the default) to fail the task
        TERMINAL with the timeout error; a ``running()`` past the overall limit fails too.

        Args:
            stage: The stage whose task timed out.

        Returns:
            The result that decides the task, or None for the timeout error.
        """
        return None

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        """Called when the running task's workflow or stage is canceled.

        What it returns is ignored: the task ends CANCELED.

        Args:
            stage: The stage whose task is canceled.

        Returns:
            Ignored (None by default).
        """
        return None

    def on_cleanup(self, stage: StageExecution) -> None:
        """Called once after the task ended, whatever its status, its result committed.

        Success, failure, timeout and cancel all count; a ``running()`` poll or a retry
        does not. It runs on a task thread outside any transaction; an exception it
        raises is ignored. A crash between the commit and the call skips it.

        Args:
            stage: The stage whose task ended.
        """
        return None

    @property
    def aliases(self) -> list[str]:
        """Other names this task is registered under."""
        return []


class RetryableTask(Task):
    """A task that polls: ``TaskResult.running()`` makes it run again after a backoff.

    The overall :meth:`get_timeout` counts from the task's first start.
    """

    def get_timeout(self) -> timedelta:
        """The overall limit across every poll (default: one hour).

        Returns:
            The limit, counted from the task's first start.
        """
        return timedelta(hours=1)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """How long to wait before the next poll (default: one second).

        Args:
            stage: The polling stage.
            duration: The time spent since the task's first start.

        Returns:
            The delay before the next poll.
        """
        return timedelta(seconds=1)

    def get_dynamic_timeout(self, stage: StageExecution) -> timedelta:
        """The overall limit for this stage (defaults to :meth:`get_timeout`).

        Args:
            stage: The polling stage.

        Returns:
            The limit, counted from the task's first start.
        """
        return self.get_timeout()

    def get_dynamic_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """The backoff for this stage (defaults to :meth:`get_backoff_period`).

        Args:
            stage: The polling stage.
            duration: The time spent since the task's first start.

        Returns:
            The delay before the next poll.
        """
        return self.get_backoff_period(stage, duration)


class SkippableTask(Task):
    """A task that skips its stage when :meth:`is_enabled` says so.

    Implement :meth:`do_execute` instead of ``execute``; when ``is_enabled(stage)`` is
    False the task returns :meth:`TaskResult.skipped` without running it.
    """

    def is_enabled(self, stage: StageExecution) -> bool:
        """Whether the task should run for ``stage`` (default: always).

        Args:
            stage: The stage about to run.

        Returns:
            False to skip the stage.
        """
        return True

    def execute(self, stage: StageExecution) -> TaskOutcome:
        """Skip when disabled, else run :meth:`do_execute`.

        Args:
            stage: The stage to run.

        Returns:
            :meth:`TaskResult.skipped`, or what :meth:`do_execute` returns.
        """
        if not self.is_enabled(stage):
            return TaskResult.skipped()
        return self.do_execute(stage)

    @abstractmethod
    def do_execute(self, stage: StageExecution) -> TaskOutcome:
        """Run the task (it is enabled) and say how it went.

        Args:
            stage: The stage to run, as for :meth:`Task.execute`.

        Returns:
            A :class:`TaskResult` (or an awaitable of one).
        """


class CallableTask(Task):
    """Adapts a plain function into a task.

    The function takes the stage and returns a :class:`TaskResult` or a dict (taken as
    the outputs of a success). It may be ``async``. Returning ``None`` (a forgotten
    ``return``, usually) fails the task with an error naming the function: return
    ``TaskResult.success()`` or ``{}`` to succeed without outputs.

    Args:
        fn: The function, ``(stage) -> TaskResult | dict`` (sync or async).
        name: The task's name (default: the function's ``__name__``).
    """

    def __init__(self, fn: Callable[[StageExecution], Any], name: str | None = None) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "callable"))
        if inspect.iscoroutinefunction(fn):
            self.execute = self._execute_async  # type: ignore[method-assign]

    def execute(self, stage: StageExecution) -> TaskOutcome:
        """Call the function and adapt its return value.

        Args:
            stage: Passed to the function.

        Returns:
            The function's :class:`TaskResult`, or a success whose outputs are its dict.

        Raises:
            TypeError: The function returned something else (None included), naming it.
        """
        return _adapt(self.fn(stage), self._label())

    async def _execute_async(self, stage: StageExecution) -> TaskResult:
        return _adapt(await self.fn(stage), self._label())

    def _label(self) -> str:
        fn_name = str(getattr(self.fn, "__name__", ""))
        if fn_name in ("", "<lambda>", self.name):
            return repr(self.name)
        return f"{fn_name}() (registered as {self.name!r})"


def _adapt(value: Any, label: str) -> TaskResult:
    if isinstance(value, TaskResult):
        return value
    if isinstance(value, dict):
        return TaskResult.success(outputs=value)
    # None is refused rather than taken for success: a function that forgot its return
    # would otherwise "succeed" without doing what it reports (issue 15).
    got = "None (no return statement?)" if value is None else type(value).__name__
    raise TypeError(
        f"task function {label} returned {got}; expected a TaskResult or a dict of "
        "outputs (return TaskResult.success() or {} to succeed without outputs)"
    )


class NoOpTask(Task):
    """Does nothing and succeeds."""

    def execute(self, stage: StageExecution) -> TaskResult:
        """Succeed at once.

        Args:
            stage: Ignored.

        Returns:
            A success without outputs.
        """
        return TaskResult.success()


class SignalWaitTask(Task):
    """Suspends its stage until a signal arrives (registered as ``wait_for_signal``).

    Outputs ``signal`` (its name), ``signal_data`` and ``signal_user``. Send the signal
    with :meth:`stabilize.Orchestrator.signal`.
    """

    def execute(self, stage: StageExecution) -> TaskResult:
        """Suspend, or finish with the signal that resumed the stage."""
        name = stage.context.get("_signal_name")
        if name is None:
            return TaskResult.suspend()
        return TaskResult.success(
            outputs={
                "signal": name,
                "signal_data": stage.context.get("_signal_data") or {},
                "signal_user": stage.signal_user,
            }
        )


class WaitTask(RetryableTask):
    """Waits without holding a worker: ``waitTime`` seconds, or until ``waitUntil``.

    ``waitUntil`` is epoch seconds or an ISO 8601 timestamp (UTC when it has no zone).
    The deadline is stored in the task's state (``until``, epoch seconds; see
    ``stage.task_state``), so the wait survives restarts: the engine re-delivers the task
    when the deadline comes. A stage run again (a jump back) waits afresh.
    """

    def get_timeout(self) -> timedelta:
        """Waits may be long: allow up to a year.

        Returns:
            365 days.
        """
        return timedelta(days=365)

    def execute(self, stage: StageExecution) -> TaskResult:
        """Succeed once the deadline has passed, else ask to be polled at the deadline.

        Args:
            stage: The waiting stage (``waitTime`` or ``waitUntil`` in its context).

        Returns:
            A success, or ``running()`` storing the deadline in the task's state.

        Raises:
            ValueError: ``waitUntil`` is neither epoch seconds nor an ISO 8601 string.
        """
        now = time.time()
        until = stage.task_state.get("until")
        if until is None:
            target = stage.context.get("waitUntil")
            until = (
                _epoch(target)
                if target is not None
                else now + float(stage.context.get("waitTime", 0))
            )
            if until <= now:
                return TaskResult.success()
            return TaskResult.running(state={"until": until})
        if now >= float(until):
            return TaskResult.success()
        return TaskResult.running()

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        """Sleep until the deadline.

        Args:
            stage: The waiting stage.
            duration: Ignored.

        Returns:
            The time left until the deadline (zero once it passed).
        """
        until = float(stage.task_state.get("until", time.time()))
        return timedelta(seconds=max(0.0, until - time.time()))


def _epoch(value: Any) -> float:
    """Epoch seconds from a number or an ISO 8601 string (naive means UTC)."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    raise ValueError(f"waitUntil must be epoch seconds or an ISO 8601 string, not {value!r}")
