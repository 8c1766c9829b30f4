"""WCP-10 Arbitrary Cycles (backward jumps): a review loop around a parallel section.

draft ──┬── spellcheck ──┬── review ──> publish
        └── factcheck ───┘     │
   ^───── jump_to("draft") ────┘  while the score is too low
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
    TaskResult,
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


def review(s: StageExecution) -> TaskResult:
    version = s.context["version"]
    if version < 3:  # not good enough: draft again, carrying the feedback
        return TaskResult.jump_to("draft", context={"previous": version})
    return TaskResult.success(outputs={"approved": version})


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    # A jump resets draft..review and merges its context into draft's own context.
    registry.register("draft", lambda s: {"version": s.context.get("previous", 0) + 1})
    registry.register("check", lambda s: {f"{s.ref_id}_ok": True})
    registry.register("review", review)
    registry.register("publish", lambda s: {"published": s.context["approved"]})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    workflow = Workflow.create(
        "docs",
        "review loop",
        [
            stage("draft", "draft"),
            stage("spellcheck", "check", {"draft"}),
            stage("factcheck", "check", {"draft"}),
            stage("review", "review", {"spellcheck", "factcheck"}),
            stage("publish", "publish", {"review"}),
        ],
        context={"_max_jumps": 5},  # the bound on jumps for this workflow (default 10)
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, "jumps:", result.jump_count, result.stage_by_ref_id("publish").outputs)
