"""Straggler policy MERGE: the first answer starts the join, later ones are folded in.

┌── cheap_model ──┐
│                 ├── answer (DISCRIMINATOR, straggler_policy=MERGE,
└── big_model ────┘           output_reducers={"draft": "collect", "cost": "sum"})
"""

from __future__ import annotations

import threading
from typing import Any

from stabilize import (
    JoinType,
    StageExecution,
    StragglerPolicy,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        answered = threading.Event()  # holds big_model back until the join ran

        def big_model(s: StageExecution) -> dict[str, Any]:
            answered.wait(10)
            return {"draft": "long answer", "cost": 30}

        def answer(s: StageExecution) -> dict[str, Any]:
            answered.set()
            return {"first": s.context["draft"]}  # the reduced value so far: ["short answer"]

        engine.register("cheap_model", lambda s: {"draft": "short answer", "cost": 1})
        engine.register("big_model", big_model)
        engine.register("answer", answer)

        workflow = Workflow.create(
            "docs",
            "late merge",
            [
                stage("cheap_model", "cheap_model"),
                stage("big_model", "big_model"),
                stage(
                    "answer",
                    "answer",
                    {"cheap_model", "big_model"},
                    join_type=JoinType.DISCRIMINATOR,
                    straggler_policy=StragglerPolicy.MERGE,
                    output_reducers={"draft": "collect", "cost": "sum"},
                ),
            ],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("answer").outputs)
