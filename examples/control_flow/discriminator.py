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
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, int]:
    with WorkflowEngine(db_url) as engine:
        picked = threading.Event()  # holds `slow` back until the join ran: a deterministic race
        pick_runs: list[str] = []

        def slow(s: StageExecution) -> dict[str, Any]:
            picked.wait(10)
            return {"answer": "slow"}

        def pick(s: StageExecution) -> dict[str, Any]:
            pick_runs.append(s.context["answer"])
            picked.set()
            return {"picked": s.context["answer"]}

        engine.register("fast", lambda s: {"answer": "fast"})
        engine.register("slow", slow)
        engine.register("pick", pick)
        engine.register("publish", lambda s: {"published": s.context["picked"]})

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
        return engine.run(workflow, timeout=30), len(pick_runs)


if __name__ == "__main__":
    result, runs = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.outputs)
    print("pick ran", runs, "time(s)")
