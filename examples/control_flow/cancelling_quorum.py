"""WCP-32 Cancelling Partial Join: 2 of 3 votes, the straggler is canceled.

┌── vote_a ──┐
├── vote_b ──┼── decide (N_OF_M, join_threshold=2, straggler_policy=CANCEL)
└── vote_c ──┘   vote_c is still running when decide fires: it ends CANCELED
"""

from __future__ import annotations

import threading
import time
from typing import Any

from stabilize import (
    JoinType,
    QueueProcessorConfig,
    StageExecution,
    StragglerPolicy,
    Task,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowEngine,
    is_cancellation_requested,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


class SlowVote(Task):
    """Works in small steps and stops when the engine asks it to."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.canceled: list[str] = []
        self.cancel_done = threading.Event()

    def execute(self, stage: StageExecution) -> TaskResult:
        self.started.set()
        deadline = time.monotonic() + 10
        while not is_cancellation_requested(stage) and time.monotonic() < deadline:
            time.sleep(0.01)  # one step of real work
        return TaskResult.success(outputs={"vote": "late"})  # discarded once canceled

    def on_cancel(self, stage: StageExecution) -> TaskResult | None:
        self.canceled.append(stage.ref_id)  # release resources here
        self.cancel_done.set()
        return None


def main(db_url: str) -> tuple[Workflow, list[str]]:
    slow = SlowVote()

    def quick(s: StageExecution) -> dict[str, Any]:
        slow.started.wait(10)  # make sure vote_c is running when the quorum is reached
        return {"vote": "yes"}

    registry = TaskRegistry()
    registry.register("quick", quick)
    registry.register("slow", slow)
    registry.register("decide", lambda s: {"decision": s.context["vote"]})
    config = QueueProcessorConfig(cancel_check_interval_seconds=0.02)
    with WorkflowEngine(db_url, config=config, registry=registry) as engine:
        workflow = Workflow.create(
            "docs",
            "cancelling quorum",
            [
                stage("vote_a", "quick"),
                stage("vote_b", "quick"),
                stage("vote_c", "slow"),
                stage(
                    "decide",
                    "decide",
                    {"vote_a", "vote_b", "vote_c"},
                    join_type=JoinType.N_OF_M,
                    join_threshold=2,
                    straggler_policy=StragglerPolicy.CANCEL,
                    output_reducers={"vote": "collect"},
                ),
            ],
        )
        engine.start(workflow)
        engine.process(timeout=30)
        slow.cancel_done.wait(10)  # on_cancel runs on a worker thread
        return engine.retrieve(workflow.id), slow.canceled


if __name__ == "__main__":
    result, canceled = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
    print("on_cancel called for", canceled)
