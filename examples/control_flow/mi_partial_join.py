"""WCP-35 Cancelling Partial Join for Multiple Instances: 2 of 3 mirrors are enough.

mirror[0] ┐
mirror[1] ├─ mirror completes once 2 instances succeeded; the third is canceled
mirror[2] ┘
"""

from __future__ import annotations

import time
from typing import Any

from stabilize import (
    MultiInstanceConfig,
    QueueProcessorConfig,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    WorkflowEngine,
    is_cancellation_requested,
)


def upload(s: StageExecution) -> dict[str, Any]:
    if s.context["host"] == "slow.example":
        deadline = time.monotonic() + 10
        while not is_cancellation_requested(s) and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"uploaded_to": s.context["host"]}


def main(db_url: str) -> Workflow:
    registry = TaskRegistry()
    registry.register("upload", upload)
    config = QueueProcessorConfig(cancel_check_interval_seconds=0.02)
    with WorkflowEngine(db_url, config=config, registry=registry) as engine:
        mirror = StageExecution(
            ref_id="mirror",
            type="upload",
            name="mirror",
            context={"hosts": ["a.example", "slow.example", "b.example"]},  # known at design time
            tasks=[TaskExecution.create("upload", "upload")],
            mi_config=MultiInstanceConfig(items_key="hosts", item_key="host", join_threshold=2),
            output_reducers={"uploaded_to": "collect"},
        )
        workflow = Workflow.create("docs", "partial join", [mirror])
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
