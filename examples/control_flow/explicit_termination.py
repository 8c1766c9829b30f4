"""WCP-43 Explicit Termination (partial): a task ends the whole workflow at once.

watchdog ─────────────── (returns TaskResult.canceled(): the workflow ends CANCELED)
approve (wait_for_signal) ── archive      still waiting: canceled, archive never runs
"""

from __future__ import annotations

from typing import Any

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
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
        **flow,
    )


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("watchdog", lambda s: TaskResult.canceled(outputs={"why": "expired"}))
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    workflow = Workflow.create(
        "docs",
        "explicit termination",
        [
            stage("approve", "wait_for_signal"),
            stage("archive", "noop", {"approve"}),
            stage("watchdog", "watchdog"),
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status)
    for s in result.stages:
        print(" ", s.ref_id, s.status)
