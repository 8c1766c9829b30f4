"""Tasks run on the loop's own thread of a processor, and the helper that takes over.

A processor's loop (``start()``'s, or ``process_all()``'s) whose step hands out one sync
task while nothing else runs runs it on its own thread; a task still running after
``inline_handover_ms`` gets a helper thread that keeps the loop going
(``queue/processor/_inline.py``). These tests pin down where tasks run, and that a slow
task on the loop's thread holds back nothing the loop owes: other workflows, lease
renewals, timeouts, cancellations and stopping; and that ``process_all()`` keeps its
timeout and its caller's Ctrl-C (``queue/processor/_drain.py``).
"""

from __future__ import annotations

import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from stabilize import StageExecution, Task, TaskResult, Workflow, WorkflowStatus
from stabilize.cancellation import is_cancellation_requested
from stabilize.queue.processor import ProcessResult, QueueProcessor
from stabilize.queue.processor._inline import Handover
from stabilize.queue.processor.config import QueueProcessorConfig

if TYPE_CHECKING:
    from integration.conftest import Engine, MakeEngine

S = WorkflowStatus
LOOP = "stabilize-processor"
DRAIN = "stabilize-process-all"
HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


def stage(ref: str, task: str, requires: Iterable[str] = ()) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires)


def workflow(*stages: StageExecution) -> Workflow:
    return Workflow.create(application="tests", name="inline", stages=stages)


def by_ref(wf: Workflow) -> dict[str, StageExecution]:
    return {s.ref_id: s for s in wf.stages}


def recorder(names: list[str]) -> Callable[[StageExecution], TaskResult]:
    """A task that records the name of the thread it runs on."""

    def run(s: StageExecution) -> TaskResult:
        names.append(threading.current_thread().name)
        return TaskResult.success()

    return run


def gated(
    started: threading.Event,
    gate: threading.Event,
    names: list[str] | None = None,
    outputs: dict[str, object] | None = None,
) -> Callable[[StageExecution], TaskResult]:
    """A task that records its thread in ``names``, sets ``started`` and returns once
    ``gate`` is set."""

    def run(s: StageExecution) -> TaskResult:
        if names is not None:
            names.append(threading.current_thread().name)
        started.set()
        assert gate.wait(HANG_GUARD)
        return TaskResult.success(outputs=outputs)

    return run


def until(condition: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + HANG_GUARD
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def helper_of(processor: QueueProcessor) -> threading.Thread:
    """The helper that took over the loop (waits for it)."""
    until(lambda: processor._inline_runs.helper is not None, "a helper to take over the loop")
    helper = processor._inline_runs.helper
    assert helper is not None
    return helper


def wait_status(engine: Engine, wf_id: str, *statuses: WorkflowStatus) -> None:
    until(lambda: engine.store.retrieve(wf_id).status in statuses, f"{wf_id} to be {statuses}")


def submit(engine: Engine, *stages: StageExecution) -> str:
    wf = workflow(*stages)
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    return wf.id


def chain(task: str, length: int) -> list[StageExecution]:
    return [stage(f"s{i}", task, {f"s{i - 1}"} if i else ()) for i in range(length)]


# -- where tasks run -----------------------------------------------------------------


def test_a_chain_runs_on_the_loop_thread_of_a_started_processor(make_engine: MakeEngine) -> None:
    engine = make_engine()
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    engine.processor.start()
    wf_id = submit(engine, *chain("record", 5))
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert names == [LOOP] * 5


def test_inline_handover_zero_runs_every_task_on_the_pool(make_engine: MakeEngine) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10, inline_handover_ms=0))
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    engine.processor.start()
    wf_id = submit(engine, *chain("record", 3))
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert len(names) == 3
    assert all(name.startswith("stabilize-task") for name in names)


def test_process_all_runs_a_chain_on_its_own_loop_thread(make_engine: MakeEngine) -> None:
    engine = make_engine()
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    wf_id = submit(engine, *chain("record", 3))
    result = engine.processor.process_all(timeout=HANG_GUARD)
    assert result.finished
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert names == [DRAIN] * 3


def test_process_all_with_inline_handover_zero_runs_every_task_on_the_pool(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10, inline_handover_ms=0))
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    wf_id = submit(engine, *chain("record", 3))
    engine.processor.process_all(timeout=HANG_GUARD)
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert len(names) == 3
    assert all(name.startswith("stabilize-task") for name in names)


def test_tasks_that_run_together_run_on_the_pool(make_engine: MakeEngine) -> None:
    engine = make_engine()
    names: list[str] = []
    both = threading.Barrier(2, timeout=HANG_GUARD)

    def meet(s: StageExecution) -> TaskResult:
        names.append(threading.current_thread().name)
        both.wait()  # only passes if the two run at the same time
        return TaskResult.success()

    engine.registry.register("meet", meet)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "meet"), stage("b", "meet"))
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert sorted(names) == sorted(n for n in names if n.startswith("stabilize-task"))


class ShortTimeout(Task):
    """A task whose execution timeout is shorter than the helper could enforce in time."""

    timeout = 0.05

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def execute(self, stage: StageExecution) -> TaskResult:
        self.names.append(threading.current_thread().name)
        return TaskResult.success()


class AsyncRecorder(Task):
    def __init__(self, names: list[str]) -> None:
        self.names = names

    async def execute(self, stage: StageExecution) -> TaskResult:
        self.names.append(threading.current_thread().name)
        return TaskResult.success()


@pytest.mark.parametrize("kind", ["short-timeout", "async"])
def test_short_timeouts_and_async_tasks_stay_off_the_loop_thread(
    make_engine: MakeEngine, kind: str
) -> None:
    engine = make_engine()
    names: list[str] = []
    task = ShortTimeout(names) if kind == "short-timeout" else AsyncRecorder(names)
    engine.registry.register("t", task)
    engine.processor.start()
    wf_id = submit(engine, *chain("t", 2))
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert len(names) == 2
    assert LOOP not in names


def test_a_failing_task_on_the_loop_thread_fails_its_stage(make_engine: MakeEngine) -> None:
    engine = make_engine()

    def boom(s: StageExecution) -> TaskResult:
        raise RuntimeError(f"boom on {threading.current_thread().name}")

    engine.registry.register("boom", boom)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "boom"))
    wait_status(engine, wf_id, S.TERMINAL)
    assert engine.processor.is_running  # the loop survives its task's exception
    details = by_ref(engine.store.retrieve(wf_id))["a"].tasks[0].task_exception_details
    assert details is not None
    assert f"boom on {LOOP}" in details["message"]


# -- a slow task on the loop's thread ---------------------------------------------------


def test_a_slow_task_hands_the_loop_to_a_helper_and_takes_it_back(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine()
    started = threading.Event()
    names: list[str] = []
    slow = gated(started, gate, names)

    engine.registry.register("slow", slow)
    engine.registry.register("record", recorder(names))
    engine.processor.start()
    blocked = submit(engine, stage("a", "slow"), stage("b", "record", {"a"}))
    assert started.wait(HANG_GUARD)
    # The loop's thread is inside the task: other work goes on all the same.
    other = submit(engine, *chain("record", 3))
    wait_status(engine, other, S.SUCCEEDED)
    assert engine.store.retrieve(blocked).status is S.RUNNING
    helper = engine.processor._inline_runs.helper
    assert helper is not None
    assert helper.is_alive()

    gate.set()
    wait_status(engine, blocked, S.SUCCEEDED)
    assert not helper.is_alive()  # the loop's thread took the loop back
    assert names[0] == LOOP
    assert all(n.startswith("stabilize-task") for n in names[1:4])  # run by the helper
    # The loop's thread runs a chain's tasks itself again.
    again = submit(engine, *chain("record", 2))
    wait_status(engine, again, S.SUCCEEDED)
    assert names[-2:] == [LOOP, LOOP]


def test_the_helper_renews_the_lease_of_the_slow_task(make_engine: MakeEngine) -> None:
    # A lease of 0.3 s, a task of 1 s and a second worker on the same database: without
    # renewal the second worker would adopt the message while the task runs, and run it
    # again.
    config = QueueProcessorConfig(poll_frequency_ms=10, lease_duration_seconds=0.3)
    lease = timedelta(seconds=0.3)
    engine = make_engine(config=config, lock_duration=lease)
    other = make_engine(engine.db, config=config, lock_duration=lease)
    runs: list[str] = []
    started = threading.Event()

    def slow(s: StageExecution) -> TaskResult:
        runs.append(threading.current_thread().name)
        started.set()
        time.sleep(1.0)
        return TaskResult.success()

    for e in (engine, other):
        e.registry.register("slow", slow)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "slow"))
    assert started.wait(HANG_GUARD)
    other.processor.start()
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert runs == [LOOP]


class Overruns(Task):
    """Overruns its execution timeout; ``on_timeout`` says where it ran."""

    timeout = 0.3

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        self.ran: list[str] = []
        self.timeouts: list[str] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        self.ran.append(threading.current_thread().name)
        self.gate.wait(HANG_GUARD)
        return TaskResult.success(outputs={"late": True})

    def on_timeout(self, stage: StageExecution) -> TaskResult | None:
        self.timeouts.append(threading.current_thread().name)
        return None


def test_the_helper_enforces_the_execution_timeout_of_the_slow_task(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine()
    task = Overruns(gate)
    engine.registry.register("overruns", task)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "overruns"))
    # Settled while the task still blocks the loop's thread.
    wait_status(engine, wf_id, S.TERMINAL)
    assert task.ran == [LOOP]
    assert len(task.timeouts) == 1
    assert task.timeouts[0].startswith("stabilize-task")
    details = by_ref(engine.store.retrieve(wf_id))["a"].tasks[0].task_exception_details
    assert details is not None
    assert "exceeded its timeout of 0.3s" in details["message"]
    gate.set()  # what the task returns late is dropped
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    after = submit(engine, stage("b", "record"))
    wait_status(engine, after, S.SUCCEEDED)
    assert engine.store.retrieve(wf_id).status is S.TERMINAL
    assert "late" not in by_ref(engine.store.retrieve(wf_id))["a"].outputs


def test_canceling_the_workflow_of_the_slow_task_cancels_it(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    started = threading.Event()
    saw_cancel: list[bool] = []

    def cooperative(s: StageExecution) -> TaskResult:
        started.set()
        deadline = time.monotonic() + HANG_GUARD
        while not is_cancellation_requested(s) and time.monotonic() < deadline:
            time.sleep(0.01)
        saw_cancel.append(is_cancellation_requested(s))
        return TaskResult.success()

    engine.registry.register("coop", cooperative)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "coop"))
    assert started.wait(HANG_GUARD)
    engine.orchestrator.cancel(wf_id, "tester", "not needed")
    wait_status(engine, wf_id, S.CANCELED)
    until(lambda: saw_cancel, "the task to see the cancellation")
    assert saw_cancel == [True]


def test_stop_while_the_slow_task_runs_commits_it_and_claims_nothing_new(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine()
    started = threading.Event()
    ran: list[str] = []
    first = gated(started, gate, outputs={"first": True})

    engine.registry.register("first", first)
    engine.registry.register("record", recorder(ran))
    engine.processor.start()
    wf_id = submit(engine, stage("a", "first"), stage("b", "record", {"a"}))
    assert started.wait(HANG_GUARD)
    engine.processor.request_stop()
    gate.set()
    assert engine.processor.stop(timeout=HANG_GUARD) == 0
    assert not engine.processor.is_running

    mid = by_ref(engine.store.retrieve(wf_id))
    assert mid["a"].status is S.SUCCEEDED
    assert mid["a"].outputs == {"first": True}
    assert ran == []  # nothing new was claimed while stopping
    engine.processor.process_all(timeout=HANG_GUARD)
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED


def test_a_task_that_never_returns_loses_its_lease_after_the_stop_timeout(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    # As with a task stuck on the pool: once stop() has waited shutdown_timeout_seconds,
    # nothing renews the task's lease, and another worker adopts its message.
    lease = timedelta(seconds=0.3)
    config = QueueProcessorConfig(
        poll_frequency_ms=10, lease_duration_seconds=0.3, shutdown_timeout_seconds=0.3
    )
    engine = make_engine(config=config, lock_duration=lease)
    other = make_engine(engine.db, config=config, lock_duration=lease)
    runs: list[str] = []
    started = threading.Event()
    stuck = gated(started, gate, runs)

    for e in (engine, other):
        e.registry.register("stuck", stuck)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "stuck"))
    assert started.wait(HANG_GUARD)
    helper = helper_of(engine.processor)
    assert engine.processor.stop(timeout=0.5) == 1  # the task still runs
    helper.join(HANG_GUARD)
    assert not helper.is_alive()
    other.processor.start()
    until(lambda: len(runs) >= 2, "another worker to adopt the message")
    gate.set()
    wait_status(engine, wf_id, S.SUCCEEDED)
    assert runs == [LOOP, LOOP]  # the second on the other worker's loop thread


def test_a_task_on_the_loop_thread_can_stop_its_processor(make_engine: MakeEngine) -> None:
    engine = make_engine()
    errors: list[BaseException] = []

    def stops(s: StageExecution) -> TaskResult:
        try:
            engine.processor.stop()  # must not wait for its own thread
        except BaseException as exc:  # pragma: no cover - the failure this test catches
            errors.append(exc)
        return TaskResult.success()

    engine.registry.register("stops", stops)
    engine.processor.start()
    wf_id = submit(engine, stage("a", "stops"))
    wait_status(engine, wf_id, S.SUCCEEDED)
    until(lambda: not engine.processor.is_running, "the loop to end")
    assert errors == []
    assert not engine.processor.is_running


def test_an_engine_error_of_the_helper_is_raised_on_the_loop_thread(
    make_engine: MakeEngine, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    # stop_on_error: an error of the engine (not of a task) stops the loop, whichever
    # thread stepped it.
    config = QueueProcessorConfig(poll_frequency_ms=10, stop_on_error=True)
    engine = make_engine(config=config)
    processor = engine.processor
    started = threading.Event()
    slow = gated(started, gate)

    def failing_step(block: float, claim: bool = True) -> tuple[int, int]:
        if threading.current_thread() is processor._inline_runs.helper:
            raise ValueError("engine bug")
        return real_step(block, claim)

    real_step = processor._step
    monkeypatch.setattr(processor, "_step", failing_step)
    engine.registry.register("slow", slow)
    processor.start()
    submit(engine, stage("a", "slow"))
    assert started.wait(HANG_GUARD)
    helper_of(processor)
    gate.set()
    thread = processor._thread
    assert thread is not None
    thread.join(HANG_GUARD)
    assert not thread.is_alive()  # the loop's thread raised it and stopped


def test_chains_of_fast_and_slow_tasks_run_each_task_once(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tasks of 0 to 25 ms around the 10 ms handover, in chains that overlap: helpers start
    # and hand the loop back again and again while other work comes and goes.
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    runs: dict[str, int] = {}
    lock = threading.Lock()
    helpers: list[threading.Thread] = []
    start_helper = engine.processor._inline_runs._start_helper

    def counted() -> threading.Thread:
        helpers.append(start_helper())
        return helpers[-1]

    monkeypatch.setattr(engine.processor._inline_runs, "_start_helper", counted)

    ids: list[str] = []

    def varied(s: StageExecution) -> TaskResult:
        key = f"{s.workflow_id}:{s.ref_id}"
        with lock:
            runs[key] = runs.get(key, 0) + 1
        # 25, 20, ..., 0 ms by position, shifted per workflow: the first chain opens with
        # 25 ms, run alone, so a helper is certain; later chains land on a helper's loop.
        shift = ids.index(s.workflow_id) if s.workflow_id in ids else 0
        time.sleep((5 - int(s.ref_id[1:]) + shift) % 6 * 0.005)
        return TaskResult.success()

    engine.registry.register("varied", varied)
    engine.processor.start()
    ids.append(submit(engine, *chain("varied", 6)))
    until(lambda: bool(helpers), "the first chain's 25 ms task to hand the loop over")
    for _ in range(5):
        ids.append(submit(engine, *chain("varied", 6)))
        time.sleep(0.01)
    for wf_id in ids:
        wait_status(engine, wf_id, S.SUCCEEDED, S.TERMINAL)
    assert [engine.store.retrieve(i).status for i in ids] == [S.SUCCEEDED] * len(ids)
    assert len(runs) == 36
    assert set(runs.values()) == {1}


# -- the watcher ----------------------------------------------------------------------


def test_handover_starts_no_helper_for_short_runs_and_one_for_a_slow_run() -> None:
    started: list[threading.Thread] = []
    done = threading.Event()

    def start_helper() -> threading.Thread:
        thread = threading.Thread(target=done.wait, args=(HANG_GUARD,), daemon=True)
        started.append(thread)
        thread.start()
        return thread

    handover = Handover(0.05, start_helper)
    try:
        for _ in range(200):
            handover.begin()
            assert handover.end() is None
        assert started == []
        handover.begin()
        until(lambda: started, "a helper for a slow run")
        time.sleep(0.2)
        assert len(started) == 1  # one helper per slow run, however long it lasts
        assert handover.end() is started[0]
        assert handover.end() is None
    finally:
        done.set()
        handover.close()


class CountingCondition(threading.Condition):
    """A condition that counts the waits of the thread waiting on it (the watcher)."""

    def __init__(self) -> None:
        super().__init__(threading.Lock())
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def test_handover_watcher_wakes_once_a_period_not_once_a_run_in_a_chain() -> None:
    # A chain of short tasks: runs begin and end with gaps between them (the commits).
    # Each wake-up of the watcher costs an interpreter-lock hand-off with the loop.
    after = 0.1
    handover = Handover(after, lambda: threading.current_thread())
    cond = handover._cond = CountingCondition()
    runs = 60
    try:
        started = time.monotonic()
        for _ in range(runs):
            handover.begin()
            assert handover.end() is None
            time.sleep(0.002)  # the watcher has time to wake up, if anything wakes it
        elapsed = time.monotonic() - started
        # One wait per period of `after` while runs go on, and a few around the ends
        # (the old watcher waited up to once per run: 15 in a run of it).
        assert cond.waits <= elapsed / after + 4
    finally:
        handover.close()


def test_handover_watcher_sees_a_slow_run_that_begins_while_runs_come_and_go() -> None:
    started: list[float] = []
    after = 0.05
    helper = threading.Thread(target=lambda: None)  # stands for the helper; never run

    def start_helper() -> threading.Thread:
        started.append(time.monotonic())
        return helper

    handover = Handover(after, start_helper)
    try:
        for _ in range(20):
            handover.begin()
            handover.end()
            time.sleep(0.002)
        begun = time.monotonic()
        handover.begin()  # the watcher is in its periodic wait now, not asleep
        until(lambda: started, "a helper for the slow run")
        assert started[0] - begun >= after
        assert handover.end() is helper
    finally:
        handover.close()


def test_handover_close_ends_its_watcher_and_a_new_run_starts_another() -> None:
    handover = Handover(10.0, lambda: threading.current_thread())
    handover.begin()
    handover.end()
    watcher = handover._watcher
    assert watcher is not None
    assert watcher.is_alive()
    handover.close()
    assert not watcher.is_alive()
    handover.begin()
    assert handover._watcher is not None
    assert handover._watcher.is_alive()
    handover.end()
    handover.close()


def test_config_refuses_a_bad_inline_handover() -> None:
    with pytest.raises(ValueError, match="inline_handover_ms must be between 0 and 1000"):
        QueueProcessorConfig(inline_handover_ms=-1)
    with pytest.raises(ValueError, match="inline_handover_ms"):
        QueueProcessorConfig(inline_handover_ms="10")  # type: ignore[arg-type]


# -- process_all: its loop's thread, its timeout and its caller ------------------------


def process_until_started(engine: Engine, started: threading.Event) -> ProcessResult:
    """Call ``process_all`` with a short timeout until the gated task has started.

    Returns the result of the call during which it started (and still runs, gated).
    """
    deadline = time.monotonic() + HANG_GUARD
    while True:
        result = engine.processor.process_all(timeout=0.2)
        if started.is_set():
            return result
        assert time.monotonic() < deadline, "timed out waiting for the task to start"


def test_process_all_returns_at_its_timeout_while_a_task_runs_on_its_thread(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    started, returned = threading.Event(), threading.Event()
    names: list[str] = []
    slow = gated(started, gate, names)

    def slow_then_note(s: StageExecution) -> TaskResult:
        result = slow(s)
        returned.set()
        return result

    engine.registry.register("slow", slow_then_note)
    wf_id = submit(engine, stage("a", "slow"))
    result = process_until_started(engine, started)
    assert not returned.is_set()  # it came back while the task still ran
    assert result.timed_out
    assert result.running == 1
    assert not result.finished
    assert names == [DRAIN]

    gate.set()
    result = engine.processor.process_all(timeout=HANG_GUARD)
    assert result.finished
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert names == [DRAIN]  # the task ran once: the next call committed its result


def test_a_later_process_all_does_other_work_while_an_earlier_calls_task_runs(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    started = threading.Event()
    names: list[str] = []
    engine.registry.register("slow", gated(started, gate))
    engine.registry.register("record", recorder(names))
    blocked = submit(engine, stage("a", "slow"), stage("b", "record", {"a"}))
    first = process_until_started(engine, started)
    assert first.timed_out

    # The loop's thread is still inside the first call's task: a helper steps for this one.
    other = submit(engine, *chain("record", 3))
    second = engine.processor.process_all(timeout=1.0)
    assert second.timed_out  # the slow task still runs
    assert second >= 3
    assert engine.store.retrieve(other).status is S.SUCCEEDED
    assert engine.store.retrieve(blocked).status is S.RUNNING
    assert all(n.startswith("stabilize-task") for n in names)

    gate.set()
    assert engine.processor.process_all(timeout=HANG_GUARD).finished
    assert engine.store.retrieve(blocked).status is S.SUCCEEDED
    # The loop's thread is back from the task and runs a chain itself again.
    again = submit(engine, *chain("record", 2))
    assert engine.processor.process_all(timeout=HANG_GUARD).finished
    assert engine.store.retrieve(again).status is S.SUCCEEDED
    assert names[-2:] == [DRAIN, DRAIN]


def test_an_interrupted_process_all_stops_its_loop_and_the_next_call_finishes(
    make_engine: MakeEngine,
) -> None:
    # Ctrl-C in the caller: process_all raises KeyboardInterrupt at once, its loop takes no
    # further step, and nothing is lost or run twice.
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    runs: list[str] = []
    main = threading.main_thread().ident
    assert main is not None
    assert threading.current_thread().ident == main

    handled = threading.Event()

    def on_sigint(signum: int, frame: object) -> None:
        handled.set()
        raise KeyboardInterrupt

    def interrupts(s: StageExecution) -> TaskResult:
        runs.append(s.ref_id)
        if s.ref_id == "s0":
            signal.pthread_kill(main, signal.SIGINT)
            # Until the main thread has taken the signal: on a loaded machine it may not run
            # before the loop has finished the chain (and the call would return normally).
            handled.wait(HANG_GUARD)
        return TaskResult.success()

    engine.registry.register("interrupts", interrupts)
    wf_id = submit(engine, *chain("interrupts", 4))
    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        with pytest.raises(KeyboardInterrupt):
            engine.processor.process_all(timeout=HANG_GUARD)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert handled.is_set()
    assert not engine.processor._drainer.busy
    acked = engine.processor._acked
    time.sleep(0.1)
    assert engine.processor._acked == acked  # an abandoned run takes no further step
    assert engine.processor.process_all(timeout=HANG_GUARD).finished
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert runs == ["s0", "s1", "s2", "s3"]


def test_process_all_raises_what_its_loop_raises(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine()
    processor = engine.processor

    def broken() -> tuple[int, int | None]:
        raise ValueError(f"engine bug on {threading.current_thread().name}")

    monkeypatch.setattr(processor, "_queue_depth", broken)
    with pytest.raises(ValueError, match=f"engine bug on {DRAIN}"):
        processor.process_all(timeout=HANG_GUARD)
    monkeypatch.undo()
    assert processor.process_all(timeout=HANG_GUARD).finished


def test_a_task_cannot_call_process_all_or_start_while_process_all_runs(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    errors: list[str] = []

    def nested(s: StageExecution) -> TaskResult:
        for call in (engine.processor.process_all, engine.processor.start):
            try:
                call()
            except RuntimeError as exc:
                errors.append(str(exc))
        return TaskResult.success()

    engine.registry.register("nested", nested)
    wf_id = submit(engine, stage("a", "nested"))
    assert engine.processor.process_all(timeout=HANG_GUARD).finished
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert errors == [
        "process_all() is already running (called from a task it runs, or from two "
        "threads at once)",
        "start() cannot run while process_all() runs",
    ]
    assert not engine.processor.is_running


def test_the_loop_thread_of_process_all_ends_when_no_call_comes(make_engine: MakeEngine) -> None:
    engine = make_engine()
    engine.registry.register("record", recorder([]))
    submit(engine, *chain("record", 2))
    engine.processor.process_all(timeout=HANG_GUARD)
    thread = engine.processor._drainer.thread
    assert thread is not None
    thread.join(HANG_GUARD)  # after LINGER_S
    assert not thread.is_alive()
    assert engine.processor._inline_runs.handover is None  # its watcher ended with it
    assert engine.processor._drainer.thread is None
    # A later call starts a new one.
    submit(engine, *chain("record", 2))
    assert engine.processor.process_all(timeout=HANG_GUARD).finished


class Hangs(Task):
    """A task past its timeout that does not return until the gate opens."""

    timeout = 0.2

    def __init__(self, gate: threading.Event, names: list[str]) -> None:
        self.gate = gate
        self.names = names

    def execute(self, stage: StageExecution) -> TaskResult:
        self.names.append(threading.current_thread().name)
        self.gate.wait(HANG_GUARD)
        return TaskResult.success()


def test_process_all_ends_when_all_is_done_though_a_timed_out_task_still_runs_on_its_thread(
    make_engine: MakeEngine, gate: threading.Event
) -> None:
    # The task is given up on at its timeout; the helper finds nothing left and ends the
    # call, which does not wait for the task to return (nor for its own deadline).
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10))
    names: list[str] = []
    engine.registry.register("hangs", Hangs(gate, names))
    wf_id = submit(engine, stage("a", "hangs"))
    result = engine.processor.process_all(timeout=HANG_GUARD / 2)
    assert names == [DRAIN]
    assert result.finished
    run = engine.processor._drainer.run
    assert run is not None
    assert run.done  # ended by its loop, not given up at the deadline
    assert not run.abandoned
    assert not gate.is_set()
    wf = engine.store.retrieve(wf_id)
    assert wf.status is S.TERMINAL
    assert wf.error == "task 'a' of stage 'a' exceeded its timeout of 0.2s"


def test_process_all_without_a_time_limit_finishes(make_engine: MakeEngine) -> None:
    engine = make_engine()
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    wf_id = submit(engine, *chain("record", 2))
    assert engine.processor.process_all(timeout=float("inf")).finished
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert names == [DRAIN] * 2


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        ("5", TypeError, r"takes a number of seconds, got '5' \(str\)"),
        (None, TypeError, r"got None \(NoneType\)"),
        (True, TypeError, r"got True \(bool\)"),
        (float("nan"), ValueError, r"timeout=nan"),
    ],
)
def test_process_all_refuses_a_timeout_that_is_not_seconds(
    make_engine: MakeEngine, timeout: object, error: type[Exception], message: str
) -> None:
    engine = make_engine()
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    wf_id = submit(engine, *chain("record", 2))
    with pytest.raises(error, match=message):
        engine.processor.process_all(timeout=timeout)  # type: ignore[arg-type]
    assert names == []  # nothing ran
    assert engine.processor.process_all(timeout=HANG_GUARD).finished  # and nothing broke
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED


# The transient error is SQLite's "database is locked"; the loop is backend-independent.
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_work_claimed_by_a_step_whose_housekeeping_fails_still_runs(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The step has committed its claim when its housekeeping (lease renewal, progress,
    # recovery) fails: the task it claimed must run all the same, once.
    config = QueueProcessorConfig(poll_frequency_ms=10, retry_delay=timedelta(0))
    engine = make_engine(config=config)
    processor = engine.processor
    names: list[str] = []
    engine.registry.register("record", recorder(names))
    failed: list[int] = []
    real_recover = processor._maybe_recover

    def recover_fails_once(force: bool = False) -> None:
        if processor._inflight and not failed:
            failed.append(len(processor._inflight))
            raise sqlite3.OperationalError("database is locked")
        real_recover(force)

    monkeypatch.setattr(processor, "_maybe_recover", recover_fails_once)
    wf_id = submit(engine, *chain("record", 2))
    assert processor.process_all(timeout=HANG_GUARD).finished
    assert failed == [1]
    assert engine.store.retrieve(wf_id).status is S.SUCCEEDED
    assert len(names) == 2
