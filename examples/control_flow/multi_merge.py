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
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, int]:
    with WorkflowEngine(db_url) as engine:
        runs: list[str] = []
        lock = threading.Lock()

        def index(s: StageExecution) -> dict[str, Any]:
            with lock:
                runs.append(s.ref_id)
            return {"indexed": True}

        engine.register("scan", lambda s: {"found": s.ref_id})
        engine.register("index", index)

        workflow = Workflow.create(
            "docs",
            "multi-merge",
            [
                stage("scan_a", "scan"),
                stage("scan_b", "scan"),
                stage("scan_c", "scan"),
                stage(
                    "index", "index", {"scan_a", "scan_b", "scan_c"}, join_type=JoinType.MULTI_MERGE
                ),
            ],
        )
        return engine.run(workflow, timeout=30), len(runs)


if __name__ == "__main__":
    result, index_runs = main("sqlite:///control_flow_demo.db")
    print(result.status, "index ran", index_runs, "times")
