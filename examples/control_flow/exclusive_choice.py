"""WCP-4 Exclusive Choice and WCP-5 Simple Merge.

          ┌─[amount <= 100]── auto_approve ──┐
triage ───┤                                  ├── book
          └─[amount > 100]─── manual_review ─┘
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    JoinType,
    SplitType,
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str, amount: int = 40) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("triage", lambda s: {"amount": amount})
        engine.register("approve", lambda s: {"approved_by": s.ref_id})
        engine.register("book", lambda s: {"booked": s.context["approved_by"]})

        workflow = Workflow.create(
            "docs",
            "exclusive choice",
            [
                stage(
                    "triage",
                    "triage",
                    split_type=SplitType.OR,
                    split_conditions={
                        "auto_approve": "amount <= 100",
                        "manual_review": "amount > 100",
                    },
                ),
                stage("auto_approve", "approve", {"triage"}),
                stage("manual_review", "approve", {"triage"}),
                # The branch not taken ends SKIPPED, so the join waits only for the live one.
                stage("book", "book", {"auto_approve", "manual_review"}, join_type=JoinType.OR),
            ],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
