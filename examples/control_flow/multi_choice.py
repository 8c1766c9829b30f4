"""WCP-6 Multi-Choice, WCP-7 Structured Synchronizing Merge, stage enable conditions.

            ┌─[email]── send_email ─────────────┐
prefs ──────┼─[sms]──── send_sms ─── log_sms ───┼── summary
            └─[push]─── send_push ──────────────┘      │
                                                   audit  (stageEnabled: "len(channels) > 2")
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    JoinType,
    Orchestrator,
    QueueProcessor,
    SplitType,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task)],
        **flow,
    )


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("prefs", lambda s: {"channels": ["email", "push"]})
    registry.register("send", lambda s: {f"sent_{s.ref_id}": True})
    registry.register("summary", lambda s: {"sent": sorted(k for k in s.context if "sent_" in k)})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    workflow = Workflow.create(
        "docs",
        "multi-choice",
        [
            stage(
                "prefs",
                "prefs",
                split_type=SplitType.OR,
                split_conditions={  # every branch whose condition holds is taken
                    "send_email": "'email' in channels",
                    "send_sms": "'sms' in channels",
                    "send_push": "'push' in channels",
                },
            ),
            stage("send_email", "send", {"prefs"}),
            stage("send_sms", "send", {"prefs"}),
            stage("log_sms", "send", {"send_sms"}),  # behind a branch not taken: skipped too
            stage("send_push", "send", {"prefs"}),
            stage(
                "summary", "summary", {"send_email", "log_sms", "send_push"}, join_type=JoinType.OR
            ),
            stage("audit", "send", {"summary"}, context={"stageEnabled": "len(channels) > 2"}),
        ],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
