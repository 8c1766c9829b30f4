"""WCP-8 Multi-Merge: the join runs once for every upstream branch that succeeds.

┌── scan_a ──┐
├── scan_b ──┼── index  (runs 3 times)
└── scan_c ──┘
"""

from __future__ import annotations

import threading
from typing import Any

from stabilize import (
    JoinType,
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


def main(db_url: str) -> tuple[Workflow, int]:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    runs: list[str] = []
    lock = threading.Lock()

    def index(s: StageExecution) -> dict[str, Any]:
        with lock:
            runs.append(s.ref_id)
        return {"indexed": True}

    registry = TaskRegistry()
    registry.register("scan", lambda s: {"found": s.ref_id})
    registry.register("index", index)
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    workflow = Workflow.create(
        "docs",
        "multi-merge",
        [
            stage("scan_a", "scan"),
            stage("scan_b", "scan"),
            stage("scan_c", "scan"),
            stage("index", "index", {"scan_a", "scan_b", "scan_c"}, join_type=JoinType.MULTI_MERGE),
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id), len(runs)


if __name__ == "__main__":
    result, index_runs = main("sqlite:///control_flow_demo.db")
    print(result.status, "index ran", index_runs, "times")
