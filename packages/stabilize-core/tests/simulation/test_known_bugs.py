"""Minimal reproductions of engine bugs the simulation found.

Each names the seed that found it. A bug not fixed yet is skipped, together with its
seeds in test_simulation.py, naming it; the fixed ones stay here as regression tests.
"""

from __future__ import annotations

import time
from pathlib import Path

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)

HANG_GUARD_S = 30.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_task_whose_stage_ends_in_the_same_commit_is_not_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    queue._create_table()
    clock = Clock()
    runs: list[str] = []

    def work(stage: StageExecution) -> TaskResult:
        runs.append(stage.idempotency_key)
        return TaskResult.success()

    registry = TaskRegistry()
    registry.register("work", work)
    stage = StageExecution(
        ref_id="s0",
        type="work",
        name="s0",
        tasks=[TaskExecution.create("t0", "work")],
        deadline_seconds=10,
    )
    wf = Workflow.create("sim", "deadline in the same batch", [stage])
    Orchestrator(queue, store=store, clock=clock).start(wf)

    # A worker starts the workflow and runs the task, then dies before committing.
    first = QueueProcessor(queue, store=store, task_registry=registry, clock=clock)
    assert first.process_one()
    deadline = time.monotonic() + HANG_GUARD_S
    while not runs and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(runs) == 1
    first._shutdown_runner(wait=True)

    # Past its lease and past the stage's deadline, the next worker claims the task's
    # message and the deadline in one transaction: the deadline ends the stage there.
    clock.now += 61
    second = QueueProcessor(queue, store=store, task_registry=registry, clock=clock)
    second.process_all(timeout=HANG_GUARD_S)

    result = store.retrieve(wf.id)
    assert result.status is WorkflowStatus.TERMINAL
    assert result.stages[0].tasks[0].status is WorkflowStatus.CANCELED
    assert len(runs) == 1, "the task ran again although the same commit canceled it"
