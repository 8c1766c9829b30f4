"""WCP-10 Arbitrary Cycles (backward jumps): a review loop around a parallel section.

draft ──┬── spellcheck ──┬── review ──> publish
        └── factcheck ───┘     │
   ^───── jump_to("draft") ────┘  while the score is too low
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    TaskResult,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def review(s: StageExecution) -> TaskResult:
    version = s.context["version"]
    if version < 3:  # not good enough: draft again, carrying the feedback
        return TaskResult.jump_to("draft", context={"previous": version})
    return TaskResult.success(outputs={"approved": version})


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        # A jump resets draft..review and merges its context into draft's own context.
        engine.register("draft", lambda s: {"version": s.context.get("previous", 0) + 1})
        engine.register("check", lambda s: {f"{s.ref_id}_ok": True})
        engine.register("review", review)
        engine.register("publish", lambda s: {"published": s.context["approved"]})

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
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, "jumps:", result.jump_count, result.stage_by_ref_id("publish").outputs)
