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
    Orchestrator,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    is_cancellation_requested,
)


def upload(s: StageExecution) -> dict[str, Any]:
    if s.context["host"] == "slow.example":
        deadline = time.monotonic() + 10
        while not is_cancellation_requested(s) and time.monotonic() < deadline:
            time.sleep(0.01)
    return {"uploaded_to": s.context["host"]}


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("upload", upload)
    config = QueueProcessorConfig(cancel_check_interval_seconds=0.02)
    processor = QueueProcessor(queue, config=config, store=store, task_registry=registry)

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
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
