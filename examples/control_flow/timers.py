"""Durable timers: a wait stage, and a stage deadline that routes forward when exceeded.

cool_down (wait 0.2 s) ── approval (wait_for_signal, deadline 0.3 s) ── manual ── notify
                               └──── deadline exceeded: jump to notify ─────────┘
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("notify", lambda s: {"notified": True})

        workflow = Workflow.create(
            "docs",
            "timers",
            [
                # "wait" frees the worker; waitUntil takes epoch seconds or an ISO 8601 time.
                stage("cool_down", "wait", context={"waitTime": 0.2}),
                stage(
                    "approval",
                    "wait_for_signal",
                    {"cool_down"},
                    deadline_seconds=0.3,  # without deadline_route the stage would fail TERMINAL
                    deadline_route="notify",
                ),
                stage("manual", "noop", {"approval"}),
                stage("notify", "notify", {"manual"}),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)  # waits for the timer and the deadline
        return engine.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status)
    for s in result.stages:
        print(" ", s.ref_id, s.status, s.status_reason)
