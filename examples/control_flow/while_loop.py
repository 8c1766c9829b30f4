"""WCP-21 Structured Loop, pre-test (while).

refill ──[level < 3]── add ── refill_next ──┐      (back to refill)
  │  <──────────────────────────────────────┘
  └──[else]── refill_done ── report
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
    while_loop,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str, start_level: int = 0) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("add", lambda s: {"level": s.context["level"] + 1})
        engine.register("report", lambda s: {"final_level": s.context["level"]})

        loop = while_loop(
            "refill", body=[stage("add", "add")], condition="level < 3", max_iterations=10
        )
        workflow = Workflow.create(
            "docs",
            "while loop",
            [*loop, stage("report", "report", {"refill_done"})],
            context={"level": start_level},  # the condition's names must exist before the loop
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("refill").outputs)
    print(result.stage_by_ref_id("report").outputs)
