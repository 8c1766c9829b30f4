"""Task hooks on real runs: on_timeout (every timeout path), on_cleanup, SkippableTask."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from stabilize import (
    RetryableTask,
    SkippableTask,
    StageExecution,
    Task,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus
MakeEngine = Any  # the make_engine fixture (integration/conftest.py)
FakeClock = Any  # the clock fixture: call it for epoch seconds, .advance(seconds)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30  # guards a hang only
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def one_stage(task: str = "t", context: dict[str, Any] | None = None) -> Workflow:
    return Workflow.create(
        application="tests",
        name="hooks",
        stages=[
            StageExecution(
                ref_id="s",
                name="s",
                context=dict(context or {}),
                tasks=[TaskExecution.create("work", task)],
            )
        ],
    )


class Hooks:
    """What the hooks of a task saw: calls and the threads they ran on."""

    def __init__(self, replacement: TaskResult | None = None) -> None:
        self.replacement = replacement
        self.timeouts: list[str] = []
        self.cleanups: list[str] = []
        self.executes = 0
        self.lock = threading.Lock()

    def timed_out(self) -> TaskResult | None:
        with self.lock:
            self.timeouts.append(threading.current_thread().name)
        return self.replacement

    def cleaned(self, stage: StageExecution) -> None:
        with self.lock:
            self.cleanups.append(stage.ref_id)


class Blocks(Task):
    """Blocks on ``gate`` longer than its execution timeout."""

    timeout = 0.2

    def __init__(self, hooks: Hooks, gate: threading.Event) -> None:
        self.hooks, self.gate = hooks, gate

    def execute(self, stage: StageExecution) -> TaskResult:
        self.gate.wait(30)
        return TaskResult.success({"late": True})

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        return self.hooks.timed_out()

    def on_cleanup(self, stage: StageExecution) -> None:
        self.hooks.cleaned(stage)


class SleepsAsync(Task):
    timeout = 0.2

    def __init__(self, hooks: Hooks) -> None:
        self.hooks = hooks

    async def execute(self, stage: StageExecution) -> TaskResult:
        await asyncio.sleep(30)
        return TaskResult.success()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        return self.hooks.timed_out()


class PollsForever(RetryableTask):
    """Returns running(); each run moves the fake clock 3 s (its overall limit is 5 s)."""

    def __init__(self, hooks: Hooks, clock: FakeClock, backoff: float = 0.0) -> None:
        self.hooks, self.clock, self.backoff = hooks, clock, backoff

    def get_timeout(self) -> timedelta:
        return timedelta(seconds=5)

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(seconds=self.backoff)

    def execute(self, stage: StageExecution) -> TaskResult:
        self.hooks.executes += 1
        self.clock.advance(3)
        return TaskResult.running()

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        return self.hooks.timed_out()

    def on_cleanup(self, stage: StageExecution) -> None:
        self.hooks.cleaned(stage)


def test_execution_timeout_runs_on_timeout_once_off_the_processor_thread(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    hooks = Hooks(TaskResult.success({"rescued": True}))
    engine = make_engine()
    engine.registry.register("t", Blocks(hooks, gate))
    done = engine.run(one_stage())
    assert done.status is S.SUCCEEDED
    assert done.stages[0].outputs == {"rescued": True}
    assert len(hooks.timeouts) == 1
    assert hooks.timeouts[0].startswith("stabilize-task")  # a pool thread, not the loop's
    wait_until(lambda: hooks.cleanups == ["s"], "on_cleanup after the committed result")


def test_execution_timeout_without_a_replacement_fails_the_task(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    hooks = Hooks(None)
    engine = make_engine()
    engine.registry.register("t", Blocks(hooks, gate))
    done = engine.run(one_stage())
    assert done.status is S.TERMINAL
    details = done.stages[0].tasks[0].task_exception_details
    assert details is not None
    assert "exceeded its timeout of 0.2s" in details["message"]
    assert len(hooks.timeouts) == 1
    wait_until(lambda: hooks.cleanups == ["s"], "on_cleanup after a failure")


def test_async_execution_timeout_runs_on_timeout_once(make_engine: MakeEngine) -> None:
    hooks = Hooks(TaskResult.failed_continue("gave up", outputs={"partial": 1}))
    engine = make_engine()
    engine.registry.register("t", SleepsAsync(hooks))
    done = engine.run(one_stage())
    assert done.stages[0].status is S.FAILED_CONTINUE
    assert done.stages[0].outputs == {"partial": 1}
    assert len(hooks.timeouts) == 1


@pytest.mark.parametrize("replacement", [TaskResult.success({"gave_up": True}), None])
def test_retryable_task_running_past_its_overall_timeout_runs_on_timeout_once(
    make_engine: MakeEngine, clock: FakeClock, replacement: TaskResult | None
) -> None:
    # Before: the overall timeout was settled inside the commit and on_timeout never ran.
    hooks = Hooks(replacement)
    engine = make_engine(clock=clock)
    engine.registry.register("t", PollsForever(hooks, clock))
    done = engine.run(one_stage())
    assert hooks.executes == 2  # 3 s, then 6 s > 5 s
    assert len(hooks.timeouts) == 1
    if replacement is None:
        assert done.status is S.TERMINAL
        details = done.stages[0].tasks[0].task_exception_details
        assert details is not None
        assert "kept running for 6s, beyond its timeout of 5s" in details["message"]
    else:
        assert done.status is S.SUCCEEDED
        assert done.stages[0].outputs == {"gave_up": True}
    wait_until(lambda: hooks.cleanups == ["s"], "one on_cleanup (not after the first poll)")


def test_retryable_task_due_after_its_overall_timeout_runs_only_on_timeout(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    # The poll comes due after the limit: the task is not run again, on_timeout decides,
    # and it ran outside the transaction that claimed the message.
    hooks = Hooks(TaskResult.success({"late": True}))
    engine = make_engine(clock=clock)
    engine.registry.register("t", PollsForever(hooks, clock, backoff=60))
    wf = one_stage()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=10)
    assert hooks.executes == 1
    assert engine.store.retrieve(wf.id).status is S.RUNNING
    clock.advance(61)
    engine.processor.process_all(timeout=10)
    done = engine.store.retrieve(wf.id)
    assert hooks.executes == 1
    assert len(hooks.timeouts) == 1
    assert hooks.timeouts[0].startswith("stabilize-task")
    assert done.status is S.SUCCEEDED
    assert done.stages[0].outputs == {"late": True}


def test_on_timeout_that_raises_leaves_the_timeout_failure(make_engine: MakeEngine) -> None:
    class Broken(SleepsAsync):
        def on_timeout(self, stage: StageExecution) -> TaskResult | None:
            self.hooks.timed_out()
            raise RuntimeError("hook broke")

    hooks = Hooks()
    engine = make_engine()
    engine.registry.register("t", Broken(hooks))
    done = engine.run(one_stage())
    assert done.status is S.TERMINAL
    assert len(hooks.timeouts) == 1


def test_on_cleanup_runs_once_after_the_task_ends_not_after_polls(
    make_engine: MakeEngine,
) -> None:
    hooks = Hooks()

    class PollsTwice(RetryableTask):
        def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
            return timedelta(0)

        def execute(self, stage: StageExecution) -> TaskResult:
            hooks.executes += 1
            if hooks.executes < 3:
                return TaskResult.running()
            return TaskResult.success()

        def on_cleanup(self, stage: StageExecution) -> None:
            hooks.cleaned(stage)
            raise RuntimeError("ignored")

    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    engine.registry.register("t", PollsTwice)
    assert engine.run(one_stage()).status is S.SUCCEEDED
    assert hooks.executes == 3
    wait_until(lambda: hooks.cleanups == ["s"], "on_cleanup")


class Optional(SkippableTask):
    def is_enabled(self, stage: StageExecution) -> bool:
        return bool(stage.context.get("enabled"))

    def do_execute(self, stage: StageExecution) -> TaskResult:
        return TaskResult.success({"ran": True})


@pytest.mark.parametrize(("enabled", "status"), [(True, S.SUCCEEDED), (False, S.SKIPPED)])
def test_skippable_task_skips_its_stage_when_disabled(
    make_engine: MakeEngine, enabled: bool, status: WorkflowStatus
) -> None:
    engine = make_engine()
    engine.registry.register("t", Optional)
    done = engine.run(one_stage(context={"enabled": enabled}))
    assert done.stages[0].status is status
    assert done.stages[0].outputs == ({"ran": True} if enabled else {})
    assert done.status is S.SUCCEEDED
