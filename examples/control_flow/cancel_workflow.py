"""WCP-20 Cancel Case, and pause/resume.

crunch (checks is_cancellation_requested) ┐
approve (wait_for_signal) ────────────────┴── report     canceled: nothing runs after
"""

from __future__ import annotations

import threading
import time
from typing import Any

from stabilize import (
    QueueProcessorConfig,
    StageExecution,
    TaskRegistry,
    Workflow,
    WorkflowEngine,
    is_cancellation_requested,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> tuple[Workflow, list[Any]]:
    started, stopped = threading.Event(), threading.Event()
    seen: list[Any] = []  # statuses after pause and resume, then what crunch saw

    def crunch(s: StageExecution) -> dict[str, Any]:
        started.set()
        deadline = time.monotonic() + 10
        while not is_cancellation_requested(s) and time.monotonic() < deadline:
            time.sleep(0.01)  # a long job that checks the cooperative cancel
        seen.append(is_cancellation_requested(s))
        stopped.set()
        return {}

    registry = TaskRegistry()
    registry.register("crunch", crunch)
    config = QueueProcessorConfig(cancel_check_interval_seconds=0.02)
    with WorkflowEngine(db_url, config=config, registry=registry) as engine:
        workflow = Workflow.create(
            "docs",
            "cancel",
            [
                stage("crunch", "crunch"),
                stage("approve", "wait_for_signal"),
                stage("report", "noop", {"crunch", "approve"}),
            ],
        )
        engine.processor.start()  # a background worker, as in a service
        try:
            engine.start(workflow)
            started.wait(10)
            engine.orchestrator.pause(workflow.id)  # tasks in flight go on; nothing new starts
            seen.append(engine.retrieve(workflow.id).status)
            engine.orchestrator.resume(workflow.id)
            seen.append(engine.retrieve(workflow.id).status)
            engine.orchestrator.cancel(workflow.id, user="carol", reason="superseded")
            stopped.wait(10)  # crunch noticed the cancel and returned
        finally:
            engine.processor.stop()
        return engine.retrieve(workflow.id), seen


if __name__ == "__main__":
    result, seen = main("sqlite:///control_flow_demo.db")
    print("paused, resumed, crunch saw cancel:", seen)
    print("final:", result.status, result.cancellation_reason)
    for s in result.stages:
        print(" ", s.ref_id, s.status)
