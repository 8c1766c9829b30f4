"""WCP-1 Sequence, WCP-2 Parallel Split, WCP-3 Synchronization.

fetch ──┬── count ───┬── report
        └── longest ─┘
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("fetch", lambda s: {"words": ["durable", "flows", "resume"]})
        engine.register("count", lambda s: {"count": len(s.context["words"])})
        engine.register("longest", lambda s: {"longest": max(s.context["words"], key=len)})
        engine.register("report", lambda s: {"report": f"{s.context['count']} words"})

        workflow = Workflow.create(
            "docs",
            "sequence and parallel split",
            [
                stage("fetch", "fetch"),  # WCP-1: count and longest follow fetch
                stage("count", "count", {"fetch"}),  # WCP-2: both start when fetch succeeds
                stage("longest", "longest", {"fetch"}),
                stage("report", "report", {"count", "longest"}),  # WCP-3: AND join (default)
            ],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("report").outputs)
