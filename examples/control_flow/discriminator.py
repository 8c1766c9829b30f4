"""WCP-9 Structured Discriminator with the default straggler policy (IGNORE).

┌── fast ──┐
│          ├── pick ── publish      pick starts on the first success;
└── slow ──┘                        slow still runs to completion
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
    picked = threading.Event()  # holds `slow` back until the join ran: a deterministic race
    pick_runs: list[str] = []

    def slow(s: StageExecution) -> dict[str, Any]:
        picked.wait(10)
        return {"answer": "slow"}

    def pick(s: StageExecution) -> dict[str, Any]:
        pick_runs.append(s.context["answer"])
        picked.set()
        return {"picked": s.context["answer"]}

    registry = TaskRegistry()
    registry.register("fast", lambda s: {"answer": "fast"})
    registry.register("slow", slow)
    registry.register("pick", pick)
    registry.register("publish", lambda s: {"published": s.context["picked"]})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    workflow = Workflow.create(
        "docs",
        "discriminator",
        [
            stage("fast", "fast"),
            stage("slow", "slow"),
            stage("pick", "pick", {"fast", "slow"}, join_type=JoinType.DISCRIMINATOR),
            stage("publish", "publish", {"pick"}),
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id), len(pick_runs)


if __name__ == "__main__":
    result, runs = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.outputs)
    print("pick ran", runs, "time(s)")
