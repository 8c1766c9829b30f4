"""WCP-24 Persistent Trigger and WCP-23 Transient Trigger (signals).

intake (wait_for_signal) ── approve (wait_for_signal)
The "approved" signal is sent to `approve` before it runs: a persistent signal is
kept and consumed when `approve` suspends; a transient one is refused.
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SignalError,
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


def main(db_url: str) -> tuple[Workflow, bool]:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    processor = QueueProcessor(queue, store=store, task_registry=TaskRegistry())
    orchestrator = Orchestrator(queue, store=store)

    workflow = Workflow.create(
        "docs",
        "triggers",
        [
            stage("intake", "wait_for_signal"),
            stage("approve", "wait_for_signal", {"intake"}),
        ],
    )
    orchestrator.start(workflow)
    processor.process_all(timeout=30)  # intake waits; approve has not started
    try:  # WCP-23: a transient trigger only reaches a stage that is waiting right now
        orchestrator.signal(workflow.id, "approve", "approved", persistent=False)
        transient_refused = False
    except SignalError:
        transient_refused = True
    # WCP-24: a persistent trigger is stored with the stage until the stage waits for it.
    orchestrator.signal(workflow.id, "approve", "approved", {"by": "alice"}, user="alice")
    orchestrator.signal(workflow.id, "intake", "received")
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id), transient_refused


if __name__ == "__main__":
    result, refused = main("sqlite:///control_flow_demo.db")
    print(result.status, "transient refused:", refused)
    print(result.stage_by_ref_id("approve").outputs)
