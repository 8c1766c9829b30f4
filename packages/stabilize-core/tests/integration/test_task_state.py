"""A task's own durable state (TaskExecution.state), and the worker's database for tasks."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from stabilize import (
    RetryableTask,
    StageExecution,
    Task,
    TaskExecution,
    TaskResult,
    TransientError,
    Workflow,
    WorkflowStatus,
)
from stabilize.queue.processor.config import QueueProcessorConfig
from stabilize.tasks._database import task_backend

S = WorkflowStatus


def stage(ref: str, task: str, requires: set[str] | None = None, **context: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        context=context,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
    )


def workflow(*stages: StageExecution) -> Workflow:
    return Workflow.create(application="tests", name="task-state", stages=stages)


class Counter(RetryableTask):
    """Polls twice per run; counts its runs in the ``kept`` entry of its state."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(0)

    def execute(self, stage: StageExecution) -> TaskResult:
        state = stage.task_state
        self.seen.append(dict(state))
        polls = int(state.get("polls", 0)) + 1
        runs = int((state.get("kept") or {}).get("runs", 0))
        if polls < 2:
            return TaskResult.running(state={"polls": polls, "kept": {"runs": runs}})
        runs += 1
        return TaskResult.success(
            outputs={"runs": runs}, state={"polls": polls, "kept": {"runs": runs}}
        )


def test_state_is_committed_between_polls_and_a_jump_back_keeps_only_kept(make_engine):
    engine = make_engine()
    counter = Counter()
    engine.registry.register("count", counter)

    def again(stage: StageExecution) -> TaskResult:
        if stage.jump_count < 1:
            return TaskResult.jump_to("count")
        return TaskResult.success()

    engine.registry.register("again", again)
    final = engine.run(workflow(stage("count", "count"), stage("loop", "again", {"count"})))

    assert final.status is S.SUCCEEDED
    assert counter.seen == [
        {},
        {"polls": 1, "kept": {"runs": 0}},
        {"kept": {"runs": 1}},  # the jump back emptied the state but its kept entry
        {"polls": 1, "kept": {"runs": 1}},
    ]
    count = final.stage_by_ref_id("count")
    assert count.outputs == {"runs": 2}
    assert count.tasks[0].state == {"polls": 2, "kept": {"runs": 2}}
    assert count.context == {}  # the task's bookkeeping never reached the stage context
    assert final.stage_by_ref_id("loop").jump_count == 1


def test_a_transient_error_s_state_is_what_the_retry_reads(make_engine):
    engine = make_engine()
    seen: list[dict[str, Any]] = []

    def flaky(stage: StageExecution) -> TaskResult:
        seen.append(dict(stage.task_state))
        done = int(stage.task_state.get("done", 0))
        if done < 2:
            raise TransientError("not yet", retry_after=0, state={"done": done + 1})
        return TaskResult.success(outputs={"done": done})

    engine.registry.register("flaky", flaky)
    final = engine.run(workflow(stage("f", "flaky")))

    assert final.status is S.SUCCEEDED
    assert seen == [{}, {"done": 1}, {"done": 2}]
    assert final.stage_by_ref_id("f").tasks[0].state == {"done": 2}
    assert final.stage_by_ref_id("f").tasks[0].retry_count == 2


def test_a_state_that_cannot_be_stored_fails_only_its_task(make_engine):
    engine = make_engine()
    engine.registry.register(
        "bad",
        lambda s: TaskResult(S.RUNNING, state={"when": object()}),
    )
    engine.registry.register("good", lambda s: TaskResult.success(outputs={"ok": True}))
    bad = engine.run(workflow(stage("b", "bad")))
    good = engine.run(workflow(stage("g", "good")))

    assert bad.status is S.TERMINAL
    error = bad.stage_by_ref_id("b").tasks[0].task_exception_details["message"]
    assert "TaskResult.state['when']" in error
    assert bad.stage_by_ref_id("b").tasks[0].state == {}  # nothing of it was stored
    assert good.status is S.SUCCEEDED


def test_a_suspension_timer_resumes_the_stage_with_the_timeout_signal(make_engine, clock):
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10), clock=clock)
    seen: list[str | None] = []

    def waits(stage: StageExecution) -> TaskResult:
        name = stage.context.get("_signal_name")
        seen.append(name)
        if name is None:
            return TaskResult.suspend(signal_timeout=30)
        return TaskResult.success(outputs={"by": name, "user": stage.signal_user})

    engine.registry.register("waits", waits)
    wf = workflow(stage("w", "waits"))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=10)
    assert engine.store.retrieve(wf.id).status is S.RUNNING  # the timer is not due yet
    clock.advance(31)
    engine.processor.process_all(timeout=10)

    final = engine.store.retrieve(wf.id)
    assert final.status is S.SUCCEEDED
    assert seen == [None, "timeout"]
    assert final.stage_by_ref_id("w").outputs == {"by": "timeout", "user": None}


def test_a_signal_s_sender_is_the_stage_s_signal_user(make_engine):
    engine = make_engine()
    wf = workflow(stage("gate", "wait_for_signal"))
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=10)
    engine.orchestrator.signal(wf.id, "gate", "go", {"n": 1}, user="alice")
    engine.processor.process_all(timeout=10)

    gate = engine.store.retrieve(wf.id).stage_by_ref_id("gate")
    assert gate.outputs == {"signal": "go", "signal_data": {"n": 1}, "signal_user": "alice"}
    assert gate.signal_user == "alice"
    assert "_signal_user" not in gate.context


class SeesTheDatabase(Task):
    def __init__(self) -> None:
        self.backends: list[object] = []

    def execute(self, stage: StageExecution) -> TaskResult:
        self.backends.append(task_backend())
        return TaskResult.success()


class SeesTheDatabaseAsync(SeesTheDatabase):
    async def execute(self, stage: StageExecution) -> TaskResult:  # type: ignore[override]
        self.backends.append(task_backend())
        return TaskResult.success()


def test_a_running_task_sees_its_worker_s_database_and_nothing_else_does(make_engine):
    engine = make_engine()
    sync, asynchronous = SeesTheDatabase(), SeesTheDatabaseAsync()
    engine.registry.register("sync", sync)
    engine.registry.register("async", asynchronous)
    final = engine.run(workflow(stage("s", "sync"), stage("a", "async")))

    assert final.status is S.SUCCEEDED
    assert sync.backends == [engine.backend]
    assert asynchronous.backends == [engine.backend]
    assert task_backend() is None  # bound only while a task runs
    assert "_backend" not in StageExecution.__dataclass_fields__  # models know no storage
