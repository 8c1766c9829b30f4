"""WCP-14 Multiple Instances with a priori run-time knowledge (dynamic fan-out).

list_files ── measure[0] ┐
              measure[1] ├─ (at most 2 at once) ── report
              measure[2] │
              measure[3] ┘
"""

from __future__ import annotations

import threading
import time
from typing import Any

from stabilize import (
    MultiInstanceConfig,
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, int]:
    with WorkflowEngine(db_url) as engine:
        lock, running, peak = threading.Lock(), [0], [0]

        def measure(s: StageExecution) -> dict[str, Any]:
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return {"size": len(s.context["file"])}

        engine.register("list_files", lambda s: {"files": ["a.txt", "bb.txt", "ccc.txt", "d.md"]})
        engine.register("measure", measure)
        engine.register("report", lambda s: {"total": s.context["size"]})

        workflow = Workflow.create(
            "docs",
            "fan-out",
            [
                stage("list_files", "list_files"),
                stage(
                    "measure",
                    "measure",
                    {"list_files"},
                    mi_config=MultiInstanceConfig(
                        items_key="files", item_key="file", max_concurrency=2
                    ),
                    output_reducers={"size": "sum"},  # folds the instances' outputs
                ),
                stage("report", "report", {"measure"}),
            ],
        )
        return engine.run(workflow, timeout=30), peak[0]


if __name__ == "__main__":
    result, peak = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("measure").outputs, "peak:", peak)
    print(result.stage_by_ref_id("report").outputs)
