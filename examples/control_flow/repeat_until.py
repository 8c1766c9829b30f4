"""WCP-21 Structured Loop, post-test (repeat-until).

┌─> attempt ── until_good ──> report
└──── until "score >= 0.8", at most 5 iterations
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
    repeat_until,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def attempt(s: StageExecution) -> dict[str, Any]:
    # What the last iteration produced comes back in the context (absent the first time).
    return {"score": s.context.get("score", 0.5) + 0.2, "tries": s.context.get("tries", 0) + 1}


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("attempt", attempt)
        engine.register("report", lambda s: {"report": f"{s.context['tries']} tries"})

        loop = repeat_until(
            "until_good",
            body=[stage("attempt", "attempt")],
            until="score >= 0.8",
            max_iterations=5,
        )
        workflow = Workflow.create(
            "docs", "repeat until", [*loop, stage("report", "report", {"until_good"})]
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("until_good").outputs)
    print(result.stage_by_ref_id("report").outputs)
