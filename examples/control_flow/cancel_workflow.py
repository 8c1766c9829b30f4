"""WCP-20 Cancel Case, and pause/resume.

crunch (checks is_cancellation_requested) ┐
approve (wait_for_signal) ────────────────┴── report     canceled: nothing runs after
"""

from __future__ import annotations

import threading
import time
from typing import Any

from stabilize import (
    Orchestrator,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    is_cancellation_requested,
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


def main(db_url: str) -> tuple[Workflow, list[Any]]:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    started, stopped = threading.Event(), threading.Event()
    seen: list[Any] = []  # statuses after pause and resume, then what crunch saw

    def crunch(s: StageExecution) -> dict[str, Any]:
        started.set()
        deadline = time.monotonic() + 10
        while not is_cancellation_requested(s) and time.monotonic() < deadline:
            time.sleep(0.01)  # a long job that checks the cooperative cancel
        seen.append(is_cancellation_requested(s))
        stopped.set()
        return {}

    registry = TaskRegistry()
    registry.register("crunch", crunch)
    config = QueueProcessorConfig(cancel_check_interval_seconds=0.02)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)
    orchestrator = Orchestrator(queue, store=store)
    workflow = Workflow.create(
        "docs",
        "cancel",
        [
            stage("crunch", "crunch"),
            stage("approve", "wait_for_signal"),
            stage("report", "noop", {"crunch", "approve"}),
        ],
    )
    processor.start()  # a background worker, as in a service
    try:
        orchestrator.start(workflow)
        started.wait(10)
        orchestrator.pause(workflow.id)  # tasks in flight go on; nothing new starts
        seen.append(store.retrieve(workflow.id).status)
        orchestrator.resume(workflow.id)
        seen.append(store.retrieve(workflow.id).status)
        orchestrator.cancel(workflow.id, user="carol", reason="superseded")
        stopped.wait(10)  # crunch noticed the cancel and returned
    finally:
        processor.stop()
    return store.retrieve(workflow.id), seen


if __name__ == "__main__":
    result, seen = main("sqlite:///control_flow_demo.db")
    print("paused, resumed, crunch saw cancel:", seen)
    print("final:", result.status, result.cancellation_reason)
    for s in result.stages:
        print(" ", s.ref_id, s.status)
