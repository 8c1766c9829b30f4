"""WCP-17 Interleaved Parallel Routing / WCP-39 Critical Section / WCP-40 Interleaved Routing.

┌── migrate_users ───┐
├── migrate_orders ──┼── done      the three share mutex_key="db-schema":
└── migrate_stock ───┘             they run one at a time, in any order
"""

from __future__ import annotations

import threading
import time
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


def main(db_url: str) -> tuple[Workflow, list[tuple[float, float]]]:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()

    def migrate(s: StageExecution) -> dict[str, Any]:
        start = time.monotonic()
        time.sleep(0.05)  # holds the critical section for a while
        with lock:
            spans.append((start, time.monotonic()))
        return {s.ref_id: "migrated"}

    registry = TaskRegistry()
    registry.register("migrate", migrate)
    processor = QueueProcessor(queue, store=store, task_registry=registry)  # 10 workers

    tables = ["migrate_users", "migrate_orders", "migrate_stock"]
    workflow = Workflow.create(
        "docs",
        "mutex",
        [
            *(stage(ref, "migrate", mutex_key="db-schema") for ref in tables),
            stage("done", "noop", set(tables)),
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id), sorted(spans)


if __name__ == "__main__":
    result, spans = main("sqlite:///control_flow_demo.db")
    print(result.status, [f"{b - spans[0][0]:.2f}-{e - spans[0][0]:.2f}s" for b, e in spans])
