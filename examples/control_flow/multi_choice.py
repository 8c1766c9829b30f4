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
    SplitType,
    StageExecution,
    Workflow,
    WorkflowEngine,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("prefs", lambda s: {"channels": ["email", "push"]})
        engine.register("send", lambda s: {f"sent_{s.ref_id}": True})
        engine.register("summary", lambda s: {"sent": sorted(k for k in s.context if "sent_" in k)})

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
                    "summary",
                    "summary",
                    {"send_email", "log_sms", "send_push"},
                    join_type=JoinType.OR,
                ),
                stage("audit", "send", {"summary"}, context={"stageEnabled": "len(channels) > 2"}),
            ],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    for s in result.stages:
        print(s.ref_id, s.status, s.status_reason, s.outputs)
