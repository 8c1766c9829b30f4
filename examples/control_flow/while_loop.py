"""WCP-21 Structured Loop, pre-test (while).

refill ──[level < 3]── add ── refill_next ──┐      (back to refill)
  │  <──────────────────────────────────────┘
  └──[else]── refill_done ── report
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
    while_loop,
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


def main(db_url: str, start_level: int = 0) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("add", lambda s: {"level": s.context["level"] + 1})
    registry.register("report", lambda s: {"final_level": s.context["level"]})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    loop = while_loop(
        "refill", body=[stage("add", "add")], condition="level < 3", max_iterations=10
    )
    workflow = Workflow.create(
        "docs",
        "while loop",
        [*loop, stage("report", "report", {"refill_done"})],
        context={"level": start_level},  # the condition's names must exist before the loop
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("refill").outputs)
    print(result.stage_by_ref_id("report").outputs)
