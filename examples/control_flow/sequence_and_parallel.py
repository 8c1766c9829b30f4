"""WCP-1 Sequence, WCP-2 Parallel Split, WCP-3 Synchronization.

fetch ──┬── count ───┬── report
        └── longest ─┘
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
    registry.register("fetch", lambda s: {"words": ["durable", "flows", "resume"]})
    registry.register("count", lambda s: {"count": len(s.context["words"])})
    registry.register("longest", lambda s: {"longest": max(s.context["words"], key=len)})
    registry.register("report", lambda s: {"report": f"{s.context['count']} words"})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

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
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("report").outputs)
