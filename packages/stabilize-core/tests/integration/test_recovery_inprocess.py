"""Recovery in one process: leases of dead or silent workers, and poison messages.

A crashed worker is simulated by committing, through the backend's own transaction API,
exactly what a worker commits before it runs a task: the workflow started, the task
RUNNING and its RunTask message leased to that worker. Then the worker "dies".
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from typing import Any

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow, WorkflowStatus
from stabilize.engine.messages import RUN_TASK, START_WORKFLOW, ClaimedMessage
from stabilize.engine.transitions import start_workflow
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus


def dead_pid() -> int:
    """A pid no process has (999999 unless that one happens to exist)."""
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid += 1


def one_task_workflow() -> Workflow:
    return Workflow.create(
        application="tests",
        name="recovery",
        stages=[
            StageExecution(
                ref_id="work",
                type="work",
                name="work",
                tasks=[TaskExecution.create("work", "work")],
            )
        ],
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def crash_mid_task(engine: Any, owner: str, lease_until: int, now: int) -> ClaimedMessage:
    """Commit what ``owner`` commits before running the task, as if it died right after."""
    with engine.backend.transaction() as tx:
        [start] = tx.claim(owner, now, lease_until, 10)
        assert start.kind == START_WORKFLOW
        assert tx.ack(start, owner)
        wf = tx.workflow(start.workflow_id)
        fx = start_workflow(wf, now)
        tx.save(wf, fx, now)
        [run] = tx.enqueue(
            fx.messages, now, lease_owner=owner, lease_until=lease_until, lease_limit=1
        )
    assert run.kind == RUN_TASK
    claimed: ClaimedMessage = run
    return claimed


def submit(engine: Any, runs: list[str]) -> Workflow:
    def work(stage: StageExecution) -> TaskResult:
        runs.append(stage.idempotency_key)
        return TaskResult.success(outputs={"done": True})

    engine.registry.register("work", work)
    wf = one_task_workflow()
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    return wf


def lease_of(engine: Any) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = engine.query(
        "SELECT kind, lease_owner, lease_until, attempts FROM queue_messages"
    )
    return rows


def test_lease_of_a_dead_local_worker_is_released_by_run_recovery(make_engine):
    engine = make_engine()
    runs: list[str] = []
    wf = submit(engine, runs)
    dead = f"{socket.gethostname()}:{dead_pid()}:x"
    now = now_ms()
    crash_mid_task(engine, dead, now + 600_000, now)
    crashed = engine.store.retrieve(wf.id)
    assert crashed.stages[0].tasks[0].status is S.RUNNING
    assert lease_of(engine) == [(RUN_TASK, dead, now + 600_000, 1)]

    assert engine.processor.run_recovery() == 1
    [(_, _, lease_until, _)] = lease_of(engine)
    assert lease_until is None
    engine.processor.process_all(timeout=30)

    result = engine.store.retrieve(wf.id)
    assert result.status is S.SUCCEEDED
    assert result.stages[0].outputs == {"done": True}
    task = result.stages[0].tasks[0]
    assert runs == [f"{wf.id}:{wf.stages[0].id}:{task.id}:0"]
    assert engine.count("queue_messages") == 0


def test_recover_on_start_releases_dead_leases_in_process_all(make_engine):
    engine = make_engine(config=QueueProcessorConfig(poll_frequency_ms=10, recover_on_start=True))
    runs: list[str] = []
    wf = submit(engine, runs)
    now = now_ms()
    crash_mid_task(engine, f"{socket.gethostname()}:{dead_pid()}:x", now + 600_000, now)

    engine.processor.process_all(timeout=30)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert len(runs) == 1


def test_gone_processor_of_this_process_counts_as_dead(make_engine):
    engine = make_engine()
    runs: list[str] = []
    submit(engine, runs)
    now = now_ms()
    crash_mid_task(engine, f"{socket.gethostname()}:{os.getpid()}:gone", now + 600_000, now)

    assert engine.processor.run_recovery() == 1


def test_live_processor_of_this_process_keeps_its_lease(make_engine):
    engine = make_engine()
    other = make_engine().processor  # same file, alive in this process
    runs: list[str] = []
    submit(engine, runs)
    now = now_ms()
    crash_mid_task(engine, other.owner, now + 600_000, now)

    assert engine.processor.run_recovery() == 0
    [(_, owner, lease_until, _)] = lease_of(engine)
    assert owner == other.owner
    assert lease_until == now + 600_000


def test_expired_lease_of_another_host_is_adopted(make_engine):
    engine = make_engine()
    runs: list[str] = []
    wf = submit(engine, runs)
    now = now_ms()
    stale = crash_mid_task(engine, "otherhost:1:x", now - 1, now)

    assert engine.processor.run_recovery() == 0  # never judged dead: it is not on this host
    engine.processor.process_all(timeout=30)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert len(runs) == 1
    with engine.backend.transaction() as tx:
        assert not tx.ack(stale, "otherhost:1:x")  # the old owner's ack is fenced off


def test_unexpired_foreign_lease_waits_for_expiry(make_engine, clock):
    engine = make_engine(clock=clock)
    runs: list[str] = []
    wf = submit(engine, runs)
    now = int(clock() * 1000)
    crash_mid_task(engine, "otherhost:1:x", now + 60_000, now)

    assert engine.processor.run_recovery() == 0
    assert engine.processor.process_all(timeout=0.3) == 0
    assert runs == []
    assert engine.store.retrieve(wf.id).stages[0].tasks[0].status is S.RUNNING

    clock.advance(61)
    engine.processor.process_all(timeout=30)

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert len(runs) == 1


def redeliver(engine: Any, owner: str) -> None:
    """Another worker claims the message and dies at once (its lease already expired)."""
    now = now_ms()
    with engine.backend.transaction() as tx:
        [msg] = tx.claim(owner, now, now - 1, 10)
    assert msg.kind == RUN_TASK


def test_message_over_max_attempts_is_dead_lettered_and_task_fails(make_engine):
    engine = make_engine(max_attempts=2)
    runs: list[str] = []
    wf = submit(engine, runs)
    now = now_ms()
    crash_mid_task(engine, "otherhost:1:x", now - 1, now)  # delivery 1
    redeliver(engine, "otherhost:2:y")  # delivery 2

    engine.processor.process_all(timeout=30)  # delivery 3 > max_attempts

    assert runs == []
    result = engine.store.retrieve(wf.id)
    assert result.status is S.TERMINAL
    task = result.stages[0].tasks[0]
    assert task.status is S.TERMINAL
    assert "max_attempts=2" in task.task_exception_details["message"]
    assert result.error is not None
    assert "max_attempts=2" in result.error
    assert engine.count("queue_messages") == 0
    [(kind, task_id, attempts, reason)] = engine.query(
        "SELECT kind, task_id, attempts, reason FROM dead_letters"
    )
    assert (kind, task_id, attempts) == (RUN_TASK, task.id, 3)
    assert "delivered 3 times" in reason


def test_message_at_max_attempts_still_runs(make_engine):
    engine = make_engine(max_attempts=3)
    runs: list[str] = []
    wf = submit(engine, runs)
    now = now_ms()
    crash_mid_task(engine, "otherhost:1:x", now - 1, now)
    redeliver(engine, "otherhost:2:y")

    engine.processor.process_all(timeout=30)  # delivery 3 == max_attempts: allowed

    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert len(runs) == 1
    assert engine.count("dead_letters") == 0


def test_acknowledging_several_messages_fences_each_and_locks_their_workflows(make_engine):
    engine = make_engine()
    engine.registry.register("work", lambda stage: TaskResult.success())
    owner = "here:1:x"
    workflows = [one_task_workflow() for _ in range(3)]
    runs = []
    for wf in workflows:
        engine.store.store(wf)
        engine.orchestrator.start(wf)
        now = now_ms()
        runs.append(crash_mid_task(engine, owner, now + 60_000, now))
    moved = dataclasses.replace(runs[2], lease_token=runs[2].lease_token + 1)

    with engine.backend.transaction() as tx:
        acked = tx.ack_many([runs[0], runs[1], moved], owner)
        assert acked == {runs[0].id, runs[1].id}  # the third lease is fenced off
        for wf in workflows:
            loaded = tx.workflow(wf.id)
            assert loaded is not None
            assert loaded.status is S.RUNNING
        assert tx.ack_many([runs[0]], owner) == set()  # already acknowledged

    kinds = [row[0] for row in lease_of(engine)]
    assert kinds == [RUN_TASK]  # only the fenced message is left
