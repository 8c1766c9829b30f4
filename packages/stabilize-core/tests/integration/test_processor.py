"""The queue processor on SQLite and PostgreSQL: data flow, parallelism, retries, failures."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest

from stabilize import (
    RetryableTask,
    StageExecution,
    Task,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize.backends._base import Backend
from stabilize.engine.messages import RUN_TASK
from stabilize.queue.processor.config import QueueProcessorConfig

if TYPE_CHECKING:
    from integration.conftest import Engine

S = WorkflowStatus


def stage(
    ref: str,
    task: str,
    requires: Iterable[str] = (),
    context: dict[str, Any] | None = None,
    tasks: list[str] | None = None,
) -> StageExecution:
    names = tasks or [task]
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        context=dict(context or {}),
        requisite_stage_ref_ids=set(requires),
        tasks=[TaskExecution.create(f"{ref}.{n}", n) for n in names],
    )


def workflow(*stages: StageExecution, context: dict[str, Any] | None = None) -> Workflow:
    return Workflow.create(application="tests", name="processor", stages=stages, context=context)


def by_ref(wf: Workflow) -> dict[str, StageExecution]:
    return {s.ref_id: s for s in wf.stages}


def then(effect: Callable[[StageExecution], object], result: TaskResult | None = None) -> Any:
    """A task function that runs ``effect`` and returns ``result`` (default: success)."""

    def run(s: StageExecution) -> TaskResult:
        effect(s)
        return result if result is not None else TaskResult.success()

    return run


def fast_retries(**overrides: Any) -> QueueProcessorConfig:
    settings: dict[str, Any] = {
        "poll_frequency_ms": 10,
        "transient_backoff_base_seconds": 0.01,
        "transient_backoff_max_seconds": 0.05,
        "transient_jitter": 0.0,
    }
    settings.update(overrides)
    return QueueProcessorConfig(**settings)


# -- data flow -------------------------------------------------------------------------


def test_linear_chain_passes_outputs_downstream(make_engine):
    engine = make_engine()
    seen: dict[str, dict[str, Any]] = {}

    def step(name: str) -> Callable[[StageExecution], TaskResult]:
        def run(s: StageExecution) -> TaskResult:
            seen[name] = dict(s.context)
            return TaskResult.success(outputs={name: len(seen)})

        return run

    for name in ("a", "b", "c"):
        engine.registry.register(name, step(name))

    result = engine.run(workflow(stage("a", "a"), stage("b", "b", {"a"}), stage("c", "c", {"b"})))

    assert result.status is S.SUCCEEDED
    stages = by_ref(result)
    assert [stages[r].status for r in "abc"] == [S.SUCCEEDED] * 3
    assert seen["a"] == {}
    assert seen["b"] == {"a": 1}
    assert seen["c"] == {"a": 1, "b": 2}
    assert stages["c"].outputs == {"c": 3}
    assert result.end_time is not None
    assert engine.queue.size() == 0


def test_stage_with_several_tasks_runs_them_in_order(make_engine):
    engine = make_engine()
    order: list[str] = []

    def log(name: str) -> Any:
        return then(lambda s: order.append(name), TaskResult.success(outputs={name: True}))

    for name in ("t1", "t2", "t3"):
        engine.registry.register(name, log(name))

    result = engine.run(workflow(stage("only", "t1", tasks=["t1", "t2", "t3"])))

    assert result.status is S.SUCCEEDED
    assert order == ["t1", "t2", "t3"]
    assert result.stages[0].outputs == {"t1": True, "t2": True, "t3": True}
    assert [t.status for t in result.stages[0].tasks] == [S.SUCCEEDED] * 3


def test_fan_out_then_fan_in_join_waits_for_every_branch(make_engine):
    engine = make_engine()
    joined: list[dict[str, Any]] = []
    engine.registry.register("root", lambda s: TaskResult.success(outputs={"seed": 7}))
    for name in ("x", "y", "z"):
        engine.registry.register(
            name, lambda s, n=name: TaskResult.success(outputs={n: s.context["seed"] + 1})
        )
    engine.registry.register("join", then(lambda s: joined.append(dict(s.context))))

    result = engine.run(
        workflow(
            stage("root", "root"),
            stage("x", "x", {"root"}),
            stage("y", "y", {"root"}),
            stage("z", "z", {"root"}),
            stage("join", "join", {"x", "y", "z"}),
        )
    )

    assert result.status is S.SUCCEEDED
    assert joined == [{"seed": 7, "x": 8, "y": 8, "z": 8}]
    stages = by_ref(result)
    join_start = stages["join"].start_time
    assert join_start is not None
    for branch in "xyz":
        end = stages[branch].end_time
        assert end is not None
        assert end <= join_start


def _diamond(engine: Any, first: str) -> dict[str, Any]:
    """A -> (B, C) -> D where ``first`` of B/C finishes its execute before the other."""
    other = {"b": "c", "c": "b"}[first]
    finished = {"b": threading.Event(), "c": threading.Event()}
    seen: dict[str, Any] = {}

    def branch(name: str) -> Callable[[StageExecution], TaskResult]:
        def run(s: StageExecution) -> TaskResult:
            if name == other:
                assert finished[first].wait(10), "the other branch never ran"
            finished[name].set()
            return TaskResult.success(outputs={"shared": name, "near": name, name: True})

        return run

    engine.registry.register(
        "a", lambda s: TaskResult.success(outputs={"near": "a", "far": "a", "own": "a"})
    )
    engine.registry.register("b", branch("b"))
    engine.registry.register("c", branch("c"))
    engine.registry.register("d", then(lambda s: seen.update(s.context)))
    result = engine.run(
        workflow(
            stage("a", "a"),
            stage("b", "b", {"a"}),
            stage("c", "c", {"a"}),
            stage("d", "d", {"b", "c"}, context={"own": "d"}),
            context={"far": "workflow", "wf_only": 1},
        )
    )
    assert result.status is S.SUCCEEDED
    return seen


def test_diamond_own_keys_win_and_merge_is_deterministic(make_engine):
    seen_b_first = _diamond(make_engine(), first="b")

    # own context beats every ancestor; ancestors beat the workflow context;
    # B and C tie on depth, so declaration order decides: C (declared later) wins.
    assert seen_b_first == {
        "wf_only": 1,
        "far": "a",
        "near": "c",
        "shared": "c",
        "own": "d",
        "b": True,
        "c": True,
    }


def test_diamond_merge_does_not_depend_on_completion_order(make_engine, databases):
    seen_b_first = _diamond(make_engine(databases.new("one")), first="b")
    seen_c_first = _diamond(make_engine(databases.new("two")), first="c")

    assert seen_b_first == seen_c_first
    assert seen_c_first["shared"] == "c"


# -- parallelism -----------------------------------------------------------------------


def test_sync_branches_run_at_the_same_time(make_engine):
    engine = make_engine(config=QueueProcessorConfig(max_workers=4, poll_frequency_ms=10))
    barrier = threading.Barrier(3, timeout=10)

    def meet(s: StageExecution) -> TaskResult:
        barrier.wait()  # raises BrokenBarrierError unless all three run at once
        return TaskResult.success(outputs={s.ref_id: True})

    engine.registry.register("meet", meet)
    engine.registry.register("root", lambda s: TaskResult.success())

    result = engine.run(
        workflow(
            stage("root", "root"),
            stage("p1", "meet", {"root"}),
            stage("p2", "meet", {"root"}),
            stage("p3", "meet", {"root"}),
        )
    )

    assert result.status is S.SUCCEEDED, result.error
    assert {r: s.status for r, s in by_ref(result).items()} == dict.fromkeys(
        ["root", "p1", "p2", "p3"], S.SUCCEEDED
    )


class Concurrency:
    """Counts coroutines running at once (a lock-guarded counter, no asyncio primitives)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0


def test_async_branches_run_at_the_same_time(make_engine):
    engine = make_engine(config=QueueProcessorConfig(max_workers=4, poll_frequency_ms=10))
    state = Concurrency()

    class Meet(Task):
        async def execute(self, stage: StageExecution) -> TaskResult:
            with state.lock:
                state.running += 1
                state.peak = max(state.peak, state.running)
            deadline = time.monotonic() + 10  # guards a hang only
            while time.monotonic() < deadline:
                with state.lock:
                    if state.peak >= 3:
                        break
                await asyncio.sleep(0.005)
            with state.lock:
                state.running -= 1
                peak = state.peak
            if peak < 3:
                return TaskResult.terminal(f"only {peak} coroutine(s) ran at once")
            return TaskResult.success(outputs={stage.ref_id: peak})

    engine.registry.register("meet", Meet)
    engine.registry.register("root", lambda s: TaskResult.success())

    result = engine.run(
        workflow(
            stage("root", "root"),
            stage("p1", "meet", {"root"}),
            stage("p2", "meet", {"root"}),
            stage("p3", "meet", {"root"}),
        )
    )

    assert result.status is S.SUCCEEDED, result.error
    assert state.peak == 3


# -- transient errors ------------------------------------------------------------------


def test_transient_error_retries_with_context_update(make_engine):
    engine = make_engine(config=fast_retries())
    attempts: list[dict[str, Any]] = []
    keys: list[str] = []

    def flaky(s: StageExecution) -> TaskResult:
        attempts.append(dict(s.context))
        keys.append(s.idempotency_key)
        done = s.context.get("processed", 0)
        if len(attempts) < 3:
            raise TransientError("rate limited", context_update={"processed": done + 10})
        return TaskResult.success(outputs={"processed": done})

    engine.registry.register("flaky", flaky)
    wf = workflow(stage("s", "flaky", context={"batch": "x"}))

    result = engine.run(wf)

    assert result.status is S.SUCCEEDED
    assert attempts == [
        {"batch": "x"},
        {"batch": "x", "processed": 10},
        {"batch": "x", "processed": 20},
    ]
    task = result.stages[0].tasks[0]
    prefix = f"{wf.id}:{wf.stages[0].id}:{task.id}"
    assert keys == [f"{prefix}:0", f"{prefix}:1", f"{prefix}:2"]
    assert task.retry_count == 2
    assert result.stages[0].outputs == {"processed": 20}


def test_retry_after_sets_the_delivery_time_of_the_retry(make_engine, clock, poll):
    engine = make_engine(config=fast_retries(), clock=clock)
    runs: list[int] = []

    def throttled(s: StageExecution) -> TaskResult:
        runs.append(1)
        if len(runs) == 1:
            raise TransientError("slow down", retry_after=30)
        return TaskResult.success()

    engine.registry.register("throttled", throttled)
    wf = workflow(stage("s", "throttled"))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    now_ms = int(clock() * 1000)

    def retry_queued() -> bool:
        engine.processor.process_one()
        rows = engine.query("SELECT kind, deliver_at FROM queue_messages")
        return bool(rows == [(RUN_TASK, now_ms + 30_000)])

    poll(retry_queued, "the delayed retry to be queued")
    assert runs == [1]

    # Not due yet: nothing runs. Once the clock reaches it, the task runs again.
    assert engine.processor.process_one() is False
    clock.advance(30)
    engine.processor.process_all(timeout=30)

    assert runs == [1, 1]
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED


def test_transient_error_gives_up_after_max_attempts(make_engine):
    engine = make_engine(config=fast_retries(transient_max_attempts=3))
    runs: list[int] = []

    def always(s: StageExecution) -> TaskResult:
        runs.append(1)
        raise TransientError("still down")

    engine.registry.register("always", always)

    result = engine.run(workflow(stage("s", "always")))

    assert len(runs) == 3
    assert result.status is S.TERMINAL
    task = result.stages[0].tasks[0]
    assert task.status is S.TERMINAL
    assert result.stages[0].status is S.TERMINAL
    assert "gave up after 3 attempts" in task.task_exception_details["message"]
    assert result.error is not None
    assert "gave up after 3 attempts: still down" in result.error


# -- timeouts and failures -------------------------------------------------------------


def test_sync_task_timeout_fails_terminal_with_a_clear_message(make_engine, gate):
    engine = make_engine()

    class Stuck(Task):
        timeout = 0.2

        def execute(self, stage: StageExecution) -> TaskResult:
            gate.wait(HANG)
            return TaskResult.success(outputs={"late": True})

    engine.registry.register("stuck", Stuck)
    engine.registry.register("after", lambda s: TaskResult.success())

    result = engine.run(workflow(stage("slow", "stuck"), stage("next", "after", {"slow"})))

    assert result.status is S.TERMINAL
    stages = by_ref(result)
    assert stages["slow"].status is S.TERMINAL
    assert stages["next"].status is S.NOT_STARTED
    assert stages["slow"].outputs == {}
    expected = "task 'slow.stuck' of stage 'slow' exceeded its timeout of 0.2s"
    assert stages["slow"].tasks[0].task_exception_details["message"] == expected
    assert result.error == expected


HANG = 30.0


def test_async_task_timeout_fails_terminal_with_a_clear_message(make_engine):
    engine = make_engine()

    class Sleepy(Task):
        timeout = 0.2

        async def execute(self, stage: StageExecution) -> TaskResult:
            await asyncio.sleep(HANG)
            return TaskResult.success()

    engine.registry.register("sleepy", Sleepy)

    result = engine.run(workflow(stage("nap", "sleepy")))

    assert result.status is S.TERMINAL
    details = result.stages[0].tasks[0].task_exception_details
    assert details["message"] == "task 'nap.sleepy' of stage 'nap' exceeded its timeout of 0.2s"
    assert details["exception_type"] == "TaskTimeoutError"


def test_exception_fails_terminal_with_exception_details(make_engine):
    engine = make_engine()
    ran: list[str] = []

    def broken(s: StageExecution) -> TaskResult:
        raise ValueError("boom")

    engine.registry.register("broken", broken)
    engine.registry.register("after", then(lambda s: ran.append("after")))

    result = engine.run(workflow(stage("bad", "broken"), stage("later", "after", {"bad"})))

    assert result.status is S.TERMINAL
    stages = by_ref(result)
    task = stages["bad"].tasks[0]
    assert task.status is S.TERMINAL
    details = task.task_exception_details
    assert details["exception_type"] == "ValueError"
    assert details["message"] == "task 'bad.broken' of stage 'bad' failed: ValueError: boom"
    assert "raise ValueError" in details["traceback"]
    assert stages["later"].status is S.NOT_STARTED
    assert ran == []
    assert engine.queue.size() == 0


def test_terminal_cancels_other_active_stages(make_engine, gate, poll):
    engine = make_engine(config=QueueProcessorConfig(max_workers=4, poll_frequency_ms=10))
    started = threading.Event()

    def slow(s: StageExecution) -> TaskResult:
        started.set()
        gate.wait(HANG)
        return TaskResult.success(outputs={"slow": True})

    def fail(s: StageExecution) -> TaskResult:
        assert started.wait(10)
        return TaskResult.terminal("nope")

    engine.registry.register("slow", slow)
    engine.registry.register("fail", fail)
    wf = workflow(stage("slow", "slow"), stage("fail", "fail"))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    runner = threading.Thread(target=engine.processor.process_all, kwargs={"timeout": HANG})
    runner.start()
    try:
        poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    finally:
        gate.set()  # the slow task finishes now; its result must be discarded
        runner.join(HANG)
    assert not runner.is_alive()

    result = engine.store.retrieve(wf.id)
    stages = by_ref(result)
    assert result.status is S.TERMINAL
    assert result.error == "nope"
    assert stages["fail"].status is S.TERMINAL
    assert stages["slow"].status is S.CANCELED
    assert stages["slow"].tasks[0].status is S.CANCELED
    assert stages["slow"].outputs == {}
    assert engine.queue.size() == 0


def test_non_json_result_fails_terminal(make_engine):
    engine = make_engine()
    engine.registry.register("weird", lambda s: TaskResult.success(outputs={"when": object()}))

    result = engine.run(workflow(stage("w", "weird")))

    assert result.status is S.TERMINAL
    message = result.stages[0].tasks[0].task_exception_details["message"]
    assert "TaskResult.outputs['when'] holds a value of type object" in message
    assert "'w'" in message


def test_failed_continue_lets_downstream_run(make_engine):
    engine = make_engine()
    seen: list[dict[str, Any]] = []
    engine.registry.register(
        "soft", lambda s: TaskResult.failed_continue("meh", outputs={"partial": 1})
    )
    engine.registry.register("after", then(lambda s: seen.append(dict(s.context))))

    result = engine.run(workflow(stage("soft", "soft"), stage("after", "after", {"soft"})))

    stages = by_ref(result)
    assert stages["soft"].status is S.FAILED_CONTINUE
    assert stages["after"].status is S.SUCCEEDED
    assert seen == [{"partial": 1}]
    assert result.status is S.SUCCEEDED


# -- jumps -----------------------------------------------------------------------------


def test_jump_to_loops_three_stages_three_times(make_engine):
    engine = make_engine()
    runs: Counter[str] = Counter()

    def first(s: StageExecution) -> TaskResult:
        runs["s1"] += 1
        return TaskResult.success(outputs={"pass": s.context.get("pass", 1)})

    def middle(s: StageExecution) -> TaskResult:
        runs["s2"] += 1
        return TaskResult.success(outputs={"seen_pass": s.context["pass"]})

    def last(s: StageExecution) -> TaskResult:
        runs["s3"] += 1
        current = s.context["pass"]
        if current < 3:
            return TaskResult.jump_to("s1", context={"pass": current + 1})
        return TaskResult.success(outputs={"final": current})

    engine.registry.register("first", first)
    engine.registry.register("middle", middle)
    engine.registry.register("last", last)

    result = engine.run(
        workflow(stage("s1", "first"), stage("s2", "middle", {"s1"}), stage("s3", "last", {"s2"}))
    )

    assert result.status is S.SUCCEEDED
    assert runs == {"s1": 3, "s2": 3, "s3": 3}
    assert result.jump_count == 2
    stages = by_ref(result)
    assert stages["s1"].outputs == {"pass": 3}
    assert stages["s2"].outputs == {"seen_pass": 3}
    assert stages["s3"].outputs == {"final": 3}


def test_exceeding_max_jumps_fails_terminal(make_engine):
    engine = make_engine()
    runs: Counter[str] = Counter()
    engine.registry.register("first", then(lambda s: runs.update(["s1"])))
    engine.registry.register(
        "loop", then(lambda s: runs.update(["s2"]), TaskResult.jump_to("s1", context={}))
    )

    result = engine.run(
        workflow(stage("s1", "first"), stage("s2", "loop", {"s1"}), context={"_max_jumps": 2})
    )

    assert result.status is S.TERMINAL
    assert runs == {"s1": 3, "s2": 3}
    assert result.jump_count == 2
    task = by_ref(result)["s2"].tasks[0]
    assert task.status is S.TERMINAL
    assert "_max_jumps" in task.task_exception_details["message"]
    assert result.error is not None
    assert "_max_jumps" in result.error


# -- polling ---------------------------------------------------------------------------


def test_retryable_task_polls_until_done(make_engine):
    engine = make_engine()
    polls: list[int] = []

    class Poll(RetryableTask):
        def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
            return timedelta(milliseconds=10)

        def execute(self, stage: StageExecution) -> TaskResult:
            n = stage.context.get("polls", 0) + 1
            polls.append(n)
            if n < 3:
                return TaskResult.running(context={"polls": n})
            return TaskResult.success(outputs={"polls": n})

    engine.registry.register("poll", Poll)

    result = engine.run(workflow(stage("p", "poll")))

    assert result.status is S.SUCCEEDED
    assert polls == [1, 2, 3]
    assert result.stages[0].context == {"polls": 2}
    assert result.stages[0].outputs == {"polls": 3}


def test_wait_task_waits_then_succeeds(make_engine):
    engine = make_engine()
    engine.registry.register("after", lambda s: TaskResult.success())

    result = engine.run(
        workflow(stage("w", "wait", context={"waitTime": 0.2}), stage("next", "after", {"w"}))
    )

    assert result.status is S.SUCCEEDED
    stages = by_ref(result)
    until = stages["w"].tasks[0].state["until"]  # the wait task's deadline, in its state
    assert "_wait_until" not in stages["w"].context
    end = stages["w"].tasks[0].end_time
    assert end is not None
    assert end >= int(until * 1000)
    assert stages["next"].status is S.SUCCEEDED


# -- commits ---------------------------------------------------------------------------


def test_linear_chain_takes_about_one_commit_per_stage(make_engine):
    engine = make_engine(registry=TaskRegistry())
    n = 20
    stages = [stage("s0", "noop")] + [stage(f"s{i}", "noop", {f"s{i - 1}"}) for i in range(1, n)]

    result = engine.run(workflow(*stages))

    assert result.status is S.SUCCEEDED
    assert all(s.status is S.SUCCEEDED for s in result.stages)
    assert engine.processor.commits <= 2 * n + 5, engine.processor.commits


# -- edges -----------------------------------------------------------------------------


def test_on_timeout_result_replaces_the_failure_and_the_next_stage_runs(make_engine, gate):
    """A timed-out sync task's thread cannot be killed; it must not starve later tasks."""
    engine = make_engine(config=QueueProcessorConfig(max_workers=1, poll_frequency_ms=10))
    ran: list[str] = []

    class Stuck(Task):
        timeout = 0.2

        def execute(self, stage: StageExecution) -> TaskResult:
            gate.wait(HANG)
            return TaskResult.success()

        def on_timeout(self, stage: StageExecution) -> TaskResult | None:
            return TaskResult.success(outputs={"timed_out": True})

    engine.registry.register("stuck", Stuck)
    engine.registry.register("after", then(lambda s: ran.append("after")))
    wf = workflow(stage("slow", "stuck"), stage("next", "after", {"slow"}))
    engine.store.store(wf)
    engine.orchestrator.start(wf)

    engine.processor.process_all(timeout=5)  # the stuck thread is still blocked on gate

    result = engine.store.retrieve(wf.id)
    stages = by_ref(result)
    assert stages["slow"].outputs == {"timed_out": True}
    assert ran == ["after"], f"next stage: {stages['next'].status}, {stages['next'].tasks[0]}"
    assert result.status is S.SUCCEEDED


def test_retryable_task_overall_timeout_counts_from_first_start(make_engine, clock):
    engine = make_engine(clock=clock)
    polls: list[int] = []

    class Forever(RetryableTask):
        def get_timeout(self) -> timedelta:
            return timedelta(seconds=1)

        def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
            return timedelta(0)

        def execute(self, stage: StageExecution) -> TaskResult:
            polls.append(1)
            clock.advance(0.4)  # each poll "takes" 0.4 s of engine time
            return TaskResult.running()

    engine.registry.register("forever", Forever)

    result = engine.run(workflow(stage("p", "forever")))

    assert result.status is S.TERMINAL
    message = result.stages[0].tasks[0].task_exception_details["message"]
    assert "timeout of 1s" in message
    assert "'p'" in message
    assert len(polls) == 3  # 0.4, 0.8 within the limit; 1.2 beyond it


def test_forward_jump_skips_the_stages_between(make_engine):
    engine = make_engine()
    seen: dict[str, Any] = {}
    runs: Counter[str] = Counter()
    engine.registry.register(
        "a", then(lambda s: runs.update(["a"]), TaskResult.jump_to("c", context={"via": "a"}))
    )
    engine.registry.register("b", then(lambda s: runs.update(["b"])))
    engine.registry.register("c", then(lambda s: runs.update(["c"]) or seen.update(s.context)))
    engine.registry.register("d", then(lambda s: runs.update(["d"])))

    result = engine.run(
        workflow(
            stage("a", "a"),
            stage("b", "b", {"a"}),
            stage("c", "c", {"b"}),
            stage("d", "d", {"c"}),
        )
    )

    stages = by_ref(result)
    assert result.status is S.SUCCEEDED
    assert runs == {"a": 1, "c": 1, "d": 1}
    assert stages["b"].status is S.SKIPPED
    assert seen["via"] == "a"


def test_permanent_error_is_not_retried_and_connection_error_is(make_engine):
    from stabilize import PermanentError

    engine = make_engine(config=fast_retries())
    calls: Counter[str] = Counter()

    def permanent(s: StageExecution) -> TaskResult:
        calls["permanent"] += 1
        raise PermanentError("bad input")

    def network(s: StageExecution) -> TaskResult:
        calls["network"] += 1
        if calls["network"] < 2:
            raise ConnectionError("reset")
        return TaskResult.success()

    engine.registry.register("permanent", permanent)
    engine.registry.register("network", network)

    failed = engine.run(workflow(stage("p", "permanent")))
    ok = engine.run(workflow(stage("n", "network")))

    assert failed.status is S.TERMINAL
    assert calls["permanent"] == 1
    assert ok.status is S.SUCCEEDED
    assert calls["network"] == 2


def test_async_task_transient_retry(make_engine):
    engine = make_engine(config=fast_retries())
    seen: list[dict[str, Any]] = []

    class Flaky(Task):
        async def execute(self, stage: StageExecution) -> TaskResult:
            seen.append(dict(stage.context))
            if len(seen) == 1:
                raise TransientError("later", context_update={"cursor": 5})
            return TaskResult.success(outputs={"cursor": stage.context["cursor"]})

    engine.registry.register("flaky", Flaky)

    result = engine.run(workflow(stage("f", "flaky")))

    assert result.status is S.SUCCEEDED
    assert seen == [{}, {"cursor": 5}]
    assert result.stages[0].outputs == {"cursor": 5}


def test_non_json_context_update_fails_terminal(make_engine):
    engine = make_engine(config=fast_retries())

    def bad(s: StageExecution) -> TaskResult:
        raise TransientError("x", context_update={"handle": object()})

    engine.registry.register("bad", bad)

    result = engine.run(workflow(stage("b", "bad")))

    assert result.status is S.TERMINAL
    assert "JSON" in result.stages[0].tasks[0].task_exception_details["message"]


def test_execute_returning_something_else_fails_terminal(make_engine):
    engine = make_engine()

    class Wrong(Task):
        def execute(self, stage: StageExecution) -> Any:
            return 42

    engine.registry.register("wrong", Wrong)

    result = engine.run(workflow(stage("w", "wrong")))

    assert result.status is S.TERMINAL
    message = result.stages[0].tasks[0].task_exception_details["message"]
    assert "TaskResult" in message


def test_unknown_task_type_at_run_time_fails_the_workflow(backend):
    from stabilize import Orchestrator, QueueProcessor

    store = backend.store()
    queue = backend.queue()
    wf = workflow(stage("m", "missing"))
    store.store(wf)  # no processor attached yet: nothing to check against
    Orchestrator(queue, store=store).start(wf)
    processor = QueueProcessor(queue, store=store, task_registry=TaskRegistry())
    try:
        processor.process_all(timeout=30)
    finally:
        processor.stop()

    result = store.retrieve(wf.id)
    assert result.status is S.TERMINAL
    assert result.error is not None
    assert "'missing'" in result.error
    assert "'m'" in result.error


def test_never_more_than_max_workers_tasks_at_once(make_engine):
    engine = make_engine(config=QueueProcessorConfig(max_workers=2, poll_frequency_ms=10))
    state = Concurrency()
    more = threading.Condition(state.lock)

    def hold(s: StageExecution) -> TaskResult:
        with more:
            state.running += 1
            state.peak = max(state.peak, state.running)
            more.notify_all()
            # Stay long enough for a third task to start if the engine allowed it.
            more.wait_for(lambda: state.running > 2, timeout=0.2)
            state.running -= 1
        return TaskResult.success()

    engine.registry.register("hold", hold)
    engine.registry.register("root", lambda s: TaskResult.success())
    fan = [stage(f"p{i}", "hold", {"root"}) for i in range(6)]

    result = engine.run(workflow(stage("root", "root"), *fan))

    assert result.status is S.SUCCEEDED
    assert state.peak == 2


def test_two_processors_on_one_file_run_each_task_once(make_engine, poll):
    engine = make_engine(config=QueueProcessorConfig(max_workers=3, poll_frequency_ms=10))
    second = make_engine(config=QueueProcessorConfig(max_workers=3, poll_frequency_ms=10))
    runs: Counter[str] = Counter()
    lock = threading.Lock()

    def work(s: StageExecution) -> TaskResult:
        with lock:
            runs[s.ref_id] += 1
        return TaskResult.success(outputs={s.ref_id: True})

    engine.registry.register("work", work)
    second.registry.register("work", work)
    stages = [stage("root", "work")] + [stage(f"p{i}", "work", {"root"}) for i in range(12)]
    stages.append(stage("join", "work", [f"p{i}" for i in range(12)]))
    wf = workflow(*stages)
    engine.store.store(wf)
    engine.orchestrator.start(wf)

    engine.processor.start()
    second.processor.start()
    try:
        poll(lambda: engine.store.retrieve(wf.id).status.is_complete, "the workflow to end")
    finally:
        engine.processor.stop(timeout=HANG)
        second.processor.stop(timeout=HANG)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert runs == dict.fromkeys([s.ref_id for s in stages], 1)


def test_stop_drains_running_tasks_and_claims_nothing_new(make_engine, gate, poll):
    # A long poll keeps the loop waiting for results of running tasks (it wakes as soon as
    # one arrives), so request_stop() reliably lands while a step is in progress. The task
    # runs on the pool (a task alone would run on the loop's thread: test_inline_tasks).
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=1000, inline_handover_ms=0))
    started = threading.Event()
    ran: list[str] = []

    def first(s: StageExecution) -> TaskResult:
        started.set()
        gate.wait(HANG)
        return TaskResult.success(outputs={"first": True})

    engine.registry.register("first", first)
    engine.registry.register("second", then(lambda s: ran.append("second")))
    wf = workflow(stage("a", "first"), stage("b", "second", {"a"}))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.start()
    assert started.wait(HANG)
    thread = engine.processor._thread
    assert thread is not None
    assert thread.ident is not None
    ident = thread.ident

    def loop_waits_for_results() -> bool:
        frame = sys._current_frames().get(ident)
        return frame is not None and frame.f_code.co_name == "_collect"

    # Stop while the loop waits for the running task's result (its normal resting place).
    poll(loop_waits_for_results, "the processor loop to wait for results")
    engine.processor.request_stop()
    assert engine.processor.is_stopping
    gate.set()
    assert engine.processor.stop(timeout=HANG) == 0

    mid = by_ref(engine.store.retrieve(wf.id))
    assert mid["a"].status is S.SUCCEEDED  # the running task finished and committed
    assert mid["a"].outputs == {"first": True}
    assert ran == []  # nothing new was claimed while stopping
    assert engine.queue.size() == 1

    engine.processor.process_all(timeout=HANG)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert ran == ["second"]


# The transient error is SQLite's "database is locked"; the loop is backend-independent.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_results_held_for_a_retry_survive_a_failed_cancellation_check(make_engine):
    import sqlite3

    engine = make_engine(
        config=QueueProcessorConfig(
            poll_frequency_ms=1, cancel_check_interval_seconds=0, retry_delay=timedelta(0)
        )
    )
    ran: list[str] = []

    def work(stage: StageExecution) -> TaskResult:
        ran.append(stage.ref_id)
        return TaskResult.success(outputs={"done": True})

    engine.registry.register("work", work)
    processor = engine.processor
    failures = {"commit": 1, "check": 0}
    commit, check = processor._commit, processor._check_cancellations

    def failing_commit(finished: Any, capacity: int, now: int) -> Any:
        if finished and failures["commit"]:
            failures["commit"] -= 1
            failures["check"] = 1  # the result now waits for a retry: fail the next check
            raise sqlite3.OperationalError("database is locked")
        return commit(finished, capacity, now)

    def failing_check() -> Any:
        if failures["check"]:
            failures["check"] -= 1
            raise sqlite3.OperationalError("database is locked")
        return check()

    processor._commit = failing_commit
    processor._check_cancellations = failing_check
    wf = Workflow.create(
        "tests",
        "retry",
        [
            StageExecution(
                ref_id="a",
                type="work",
                name="a",
                tasks=[TaskExecution.create("a", "work", stage_start=True, stage_end=True)],
            )
        ],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    processor.process_all(timeout=5)

    assert failures == {"commit": 0, "check": 0}  # both faults happened
    assert ran == ["a"]
    assert engine.store.retrieve(wf.id).status is WorkflowStatus.SUCCEEDED


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL: test_pg_workers
def test_a_wait_begun_after_a_stop_request_returns_at_once(make_engine):
    engine = make_engine()
    stop = threading.Event()
    stop.set()
    waiter = threading.Thread(target=engine.backend.wait_for_work, args=(600.0, stop))
    waiter.start()
    waiter.join(timeout=30)
    assert not waiter.is_alive()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL: test_pg_workers
def test_an_idle_sqlite_worker_wakes_when_this_process_submits_work(make_engine, poll):
    # The poll interval is far longer than the hang guard: only the wake-up sent by the
    # commit that enqueued the workflow's first message can start it in time (issue 19).
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=600_000))
    ran: list[str] = []

    def mark(stage: StageExecution) -> TaskResult:
        ran.append(stage.ref_id)
        return TaskResult.success()

    engine.registry.register("mark", mark)
    engine.processor.start()
    for n in range(3):  # each time from idle: the worker waits again between workflows
        wf = Workflow.create(
            "tests",
            f"wake {n}",
            [
                StageExecution.for_task("a", "mark"),
                StageExecution.for_task("b", "mark", requisite_stage_ref_ids={"a"}),
            ],
        )
        engine.store.store(wf)
        engine.orchestrator.start(wf)
        poll(
            lambda wf=wf: engine.store.retrieve(wf.id).status is WorkflowStatus.SUCCEEDED,
            f"workflow {n} to succeed",
        )
    assert ran == ["a", "b"] * 3


def test_a_worker_that_finished_a_workflow_waits_without_claiming_again(make_engine, poll):
    # A step that only settled results (the workflow ended) and left nothing running goes
    # back to waiting: no claim transaction that finds nothing (issue 19). A one-stage
    # workflow costs two transactions of the processor: start + dispatch, then the result.
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=600_000))
    engine.registry.register("mark", lambda s: TaskResult.success())
    processor = engine.processor
    processor.start()

    def settled() -> int:
        # The processor is idle once its count of transactions stops moving.
        while True:
            before = processor.commits
            time.sleep(0.3)
            if processor.commits == before:
                return int(before)

    for n in range(3):
        idle = settled()
        wf = Workflow.create("tests", f"settle {n}", [StageExecution.for_task("a", "mark")])
        engine.store.store(wf)
        engine.orchestrator.start(wf)
        poll(
            lambda wf=wf: engine.store.retrieve(wf.id).status is WorkflowStatus.SUCCEEDED,
            f"workflow {n} to succeed",
        )
        assert settled() - idle == 2, f"workflow {n}"


def test_results_of_tasks_that_finish_together_share_one_commit(make_engine):
    # Five branches whose tasks end a few milliseconds apart: their results wait for each
    # other (result_gather_ms) and are committed by one transaction, which also ends the
    # workflow (issue 19). process_all runs three: start + dispatch, the results, and its
    # last look for work. Without the wait it ran seven: the first result is committed
    # alone while the others still run.
    engine = make_engine(config=QueueProcessorConfig(max_workers=5, result_gather_ms=100))

    def staggered(stage: StageExecution) -> TaskResult:
        time.sleep(0.003 * int(stage.ref_id[1:]))
        return TaskResult.success()

    engine.registry.register("staggered", staggered)
    wf = Workflow.create(
        "tests",
        "gathered",
        [StageExecution.for_task(f"b{i}", "staggered") for i in range(5)],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    assert engine.store.retrieve(wf.id).status is WorkflowStatus.SUCCEEDED
    assert engine.processor.commits == 3


def test_result_gather_ms_is_checked():
    with pytest.raises(ValueError, match="result_gather_ms must be between 0 and 1000, got -1"):
        QueueProcessorConfig(result_gather_ms=-1)


def test_a_finished_result_is_not_held_until_a_slow_task_ends(make_engine, poll):
    # Two branches start together; "quick" returns at once, "slow" runs until the test
    # lets it go. The quick result waits for the slow one only a gap of result_gather_ms
    # without a result (0.1 s here; 4 gaps at most in all), then is committed while
    # "slow" still runs. Held until "slow" ended, it would never be seen here.
    engine = make_engine(config=QueueProcessorConfig(max_workers=2, result_gather_ms=100))
    release = threading.Event()
    engine.registry.register("quick", lambda s: TaskResult.success())
    engine.registry.register(
        "slow", lambda s: TaskResult.success() if release.wait(HANG) else TaskResult.terminal("")
    )
    wf = Workflow.create(
        "tests",
        "bounded gather",
        [StageExecution.for_task("quick", "quick"), StageExecution.for_task("slow", "slow")],
    )
    engine.store.store(wf)
    engine.processor.start()
    try:
        engine.orchestrator.start(wf)
        poll(
            lambda: (
                engine.store.retrieve(wf.id).stage_by_ref_id("quick").status
                is WorkflowStatus.SUCCEEDED
            ),
            "the quick branch to be committed while the slow one runs",
        )
        release.set()
        poll(
            lambda: engine.store.retrieve(wf.id).status is WorkflowStatus.SUCCEEDED,
            "the workflow to succeed",
        )
    finally:
        release.set()
        engine.processor.stop(timeout=HANG)


def slow_link(stage: StageExecution) -> TaskResult:
    time.sleep(0.01)
    return TaskResult.success()


def chain(name: str, length: int, task: str) -> Workflow:
    return Workflow.create(
        "tests",
        name,
        [stage(f"s{i}", task, requires=[f"s{i - 1}"] if i else []) for i in range(length)],
    )


@pytest.mark.parametrize(("interval", "skipped"), [(60_000, 5), (0, 0)])
def test_a_busy_chain_does_not_claim_again_after_finding_the_queue_empty(
    make_engine, interval, skipped
):
    # Each stage of a chain leases its successor to this worker as it queues it. Once a
    # claim came back short (it took all there was), the steps that already hold their
    # next task leave the claim out (busy_claim_interval_ms): here the 5 steps that
    # commit s0..s4's results. Interval 0 claims in every step.
    engine = make_engine(config=QueueProcessorConfig(busy_claim_interval_ms=interval))
    engine.registry.register("link", lambda s: TaskResult.success())
    done = engine.run(chain("skipping", 6, "link"))
    assert done.status is S.SUCCEEDED
    assert engine.processor.claims_skipped == skipped


def _busy_with_a_long_chain(engine: Engine, poll: Callable[..., None]) -> Workflow:
    """Start the engine's processor on a chain of 60 stages of 10 ms each; return the
    chain once its fourth stage has run (the processor is busy with it from then on)."""
    engine.registry.register("link", slow_link)
    engine.registry.register("quick", lambda s: TaskResult.success())
    long = chain("long chain", 60, "link")
    engine.store.store(long)
    engine.processor.start()
    engine.orchestrator.start(long)
    poll(lambda: by_ref(engine.store.retrieve(long.id))["s3"].status is S.SUCCEEDED, "s3")
    return long


def _ends_while_the_chain_runs(
    engine: Engine, poll: Callable[..., None], quick: Workflow, long: Workflow
) -> None:
    poll(lambda: engine.store.retrieve(quick.id).status is S.SUCCEEDED, "the quick one")
    assert engine.store.retrieve(long.id).status is S.RUNNING


def test_work_this_process_queues_is_claimed_by_a_busy_chain_at_once(make_engine, poll):
    # The interval is a minute, but a start committed by this process (the backend counts
    # such commits) makes the busy worker claim at its next step: the one-stage workflow
    # ends long before the chain does.
    engine = make_engine(config=QueueProcessorConfig(busy_claim_interval_ms=60_000))
    try:
        long = _busy_with_a_long_chain(engine, poll)
        assert engine.processor.claims_skipped > 0
        quick = workflow(stage("q", "quick"))
        engine.store.store(quick)
        engine.orchestrator.start(quick)
        _ends_while_the_chain_runs(engine, poll, quick, long)
    finally:
        engine.processor.stop(timeout=HANG)


def _second_backend(engine: Engine) -> Backend:
    """A backend of its own on the engine's database: another process, as far as this
    process's counts of claimable commits go (a connection, a pool of its own)."""
    from stabilize.backends.postgres import PostgresBackend
    from stabilize.backends.sqlite import SqliteBackend

    if engine.is_postgres:
        return PostgresBackend(engine.url, engine.db.schema)
    return SqliteBackend(engine.path)


def test_work_another_process_queues_waits_at_most_the_interval(make_engine, poll):
    # A start committed elsewhere does not move this process's count: the busy worker
    # finds it when busy_claim_interval_ms (50 ms here) has passed since its last claim,
    # still long before the chain (60 stages of 10 ms) ends.
    from stabilize.orchestrator import submit_workflow

    engine = make_engine(config=QueueProcessorConfig(busy_claim_interval_ms=50))
    other = _second_backend(engine)
    try:
        long = _busy_with_a_long_chain(engine, poll)
        quick = workflow(stage("q", "quick"))
        before = engine.backend.claimable_commits
        assert submit_workflow(other, quick, int(time.time() * 1000))
        assert engine.backend.claimable_commits == before  # not counted here
        _ends_while_the_chain_runs(engine, poll, quick, long)
    finally:
        engine.processor.stop(timeout=HANG)
        other.close()


def test_busy_claim_interval_ms_is_checked():
    with pytest.raises(ValueError, match="busy_claim_interval_ms must be between 0 and 60000"):
        QueueProcessorConfig(busy_claim_interval_ms=-1)
    with pytest.raises(ValueError, match="got 60001"):
        QueueProcessorConfig(busy_claim_interval_ms=60_001)


@pytest.mark.parametrize("setting", ["busy_claim_interval_ms", "result_gather_ms"])
@pytest.mark.parametrize("value", [None, "10", True, float("nan")])
def test_a_millisecond_setting_that_is_no_number_is_refused_by_name(setting, value):
    with pytest.raises(ValueError, match=f"{setting} must be between 0 and .*got .*milliseconds"):
        QueueProcessorConfig(**{setting: value})
