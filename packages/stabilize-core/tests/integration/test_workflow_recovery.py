"""WorkflowRecovery on real databases: a RUNNING workflow whose messages were deleted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from stabilize import (
    QueueProcessorConfig,
    RecoveryResult,
    RetryableTask,
    StageExecution,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowRecovery,
    WorkflowStatus,
    recover_on_startup,
)

S = WorkflowStatus
MakeEngine = Any  # the make_engine fixture (integration/conftest.py)


class Poll(RetryableTask):
    """Polls hourly until ``ready``; counts its runs."""

    def __init__(self) -> None:
        self.ready = False
        self.runs = 0

    def get_backoff_period(self, stage: StageExecution, duration: timedelta) -> timedelta:
        return timedelta(hours=1)

    def execute(self, stage: StageExecution) -> TaskResult:
        self.runs += 1
        return TaskResult.success({"runs": self.runs}) if self.ready else TaskResult.running()


def two_stages() -> Workflow:
    return Workflow.create(
        application="recovery",
        name="stuck",
        stages=[
            StageExecution(ref_id="a", name="a", tasks=[TaskExecution.create("poll", "poll")]),
            StageExecution(
                ref_id="b",
                name="b",
                requisite_stage_ref_ids={"a"},
                tasks=[TaskExecution.create("poll", "poll")],
            ),
        ],
    )


def started(engine: Any, task: Poll) -> Workflow:
    """A workflow whose stage ``a`` polls (its next run an hour away)."""
    engine.registry.register("poll", task)
    wf = two_stages()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=10)
    assert task.runs == 1
    return wf


def drop_messages(engine: Any, workflow_id: str) -> None:
    with engine.backend.transaction() as tx:
        tx.cur.execute(tx.q["drop_workflow_messages"], (workflow_id,))


def test_stuck_running_workflow_is_resumed_and_finishes(make_engine: MakeEngine) -> None:
    engine = make_engine()
    task = Poll()
    wf = started(engine, task)
    recovery = WorkflowRecovery(engine.store, engine.queue)
    assert [r.status for r in recovery.recover_pending_workflows()] == ["skipped"]
    assert engine.count("queue_messages") == 1

    drop_messages(engine, wf.id)
    task.ready = True
    results = recovery.recover_pending_workflows()
    assert results == [RecoveryResult(wf.id, "recovered", "re-queued the running task of 'a'", 1)]
    # Idempotent: the workflow has a message now.
    again = recovery.recover_pending_workflows(application="recovery")
    assert [(r.status, r.message) for r in again] == [("skipped", "has a message in the queue")]
    assert engine.count("queue_messages") == 1

    engine.processor.process_all(timeout=10)
    done = engine.store.retrieve(wf.id)
    assert done.status is S.SUCCEEDED
    assert [s.outputs for s in done.stages] == [{"runs": 2}, {"runs": 3}]
    assert recovery.recover_pending_workflows() == []


def test_recover_on_start_resumes_stuck_workflows(make_engine: MakeEngine) -> None:
    engine = make_engine()
    task = Poll()
    wf = started(engine, task)
    drop_messages(engine, wf.id)
    task.ready = True
    worker = make_engine(
        config=QueueProcessorConfig(poll_frequency_ms=10, recover_on_start=True),
        registry=engine.registry,
    )
    worker.processor.process_all(timeout=10)
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED


def test_recovery_skips_other_applications_old_workflows_and_waiting_stages(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    wf = started(engine, Poll())
    drop_messages(engine, wf.id)
    assert recover_on_startup(engine.store, engine.queue, application="other") == []
    # Started "now" by the engine's clock; recovery's clock is a day and more later.
    late = WorkflowRecovery(
        engine.store, engine.queue, max_recovery_age_hours=1, clock=lambda: 2e10
    )
    assert late.recover_pending_workflows() == []
    assert engine.count("queue_messages") == 0

    # A running workflow whose stage waits for a signal has no message either: nothing
    # to resume, and nothing is enqueued.
    engine.registry.register("suspend", lambda stage: TaskResult.suspend())
    gate = Workflow.create(
        application="gates",
        name="gate",
        stages=[StageExecution(ref_id="g", name="g", tasks=[TaskExecution.create("g", "suspend")])],
    )
    assert engine.run(gate).stages[0].status is S.SUSPENDED
    drop_messages(engine, gate.id)  # a signal timer, if any
    (result,) = recover_on_startup(engine.store, engine.queue, application="gates")
    assert result.status == "skipped"
    assert "no running task to resume" in result.message
    assert engine.count("queue_messages") == 0


def test_recovery_refuses_a_queue_on_another_database(
    make_engine: MakeEngine, databases: Any
) -> None:
    engine = make_engine()
    other = databases.new()
    with pytest.raises(ValueError, match="same database"):
        WorkflowRecovery(engine.store, other.queue())
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        WorkflowRecovery(engine.store, engine.queue, batch_size=0)
