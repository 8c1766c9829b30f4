"""WCP-16 Deferred Choice: whichever stage is triggered first wins, the other is withdrawn.

┌── by_email (wait_for_signal) ──┐
│        deferred_choice_group   ├── close        the first signal decides
└── by_phone (wait_for_signal) ──┘
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
    registry.register("close", lambda s: {"closed_via": s.context["signal_data"]["channel"]})
    processor = QueueProcessor(queue, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue, store=store)

    workflow = Workflow.create(
        "docs",
        "deferred choice",
        [
            stage("by_email", "wait_for_signal", deferred_choice_group="reply"),
            stage("by_phone", "wait_for_signal", deferred_choice_group="reply"),
            stage("close", "close", {"by_email", "by_phone"}),
        ],
    )
    orchestrator.start(workflow)
    processor.process_all(timeout=30)  # both stages are now SUSPENDED, waiting
    orchestrator.signal(workflow.id, "by_phone", "replied", {"channel": "phone"})
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
