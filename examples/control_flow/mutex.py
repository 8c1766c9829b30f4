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
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, list[tuple[float, float]]]:
    with WorkflowEngine(db_url) as engine:
        spans: list[tuple[float, float]] = []
        lock = threading.Lock()

        def migrate(s: StageExecution) -> dict[str, Any]:
            start = time.monotonic()
            time.sleep(0.05)  # holds the critical section for a while
            with lock:
                spans.append((start, time.monotonic()))
            return {s.ref_id: "migrated"}

        engine.register("migrate", migrate)  # the engine's processor runs 10 tasks at once

        tables = ["migrate_users", "migrate_orders", "migrate_stock"]
        workflow = Workflow.create(
            "docs",
            "mutex",
            [
                *(stage(ref, "migrate", mutex_key="db-schema") for ref in tables),
                stage("done", "noop", set(tables)),
            ],
        )
        return engine.run(workflow, timeout=30), sorted(spans)


if __name__ == "__main__":
    result, spans = main("sqlite:///control_flow_demo.db")
    print(result.status, [f"{b - spans[0][0]:.2f}-{e - spans[0][0]:.2f}s" for b, e in spans])
