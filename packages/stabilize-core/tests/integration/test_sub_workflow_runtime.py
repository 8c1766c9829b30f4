"""SubWorkflowTask with a child built at run time from StageExecution objects (issue 14).

The original package's examples build the child inside ``execute``: a subclass puts a
``_sub_workflow_config`` whose ``stages`` are ``StageExecution`` objects into the stage
context, then lets ``SubWorkflowTask`` start it. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stabilize import (
    StageExecution,
    SubWorkflowTask,
    TaskExecution,
    TaskResult,
    Workflow,
    WorkflowStatus,
)

S = WorkflowStatus
MakeEngine = Callable[..., Any]


def stage(ref: str, kind: str, after: set[str] | None = None, **context: Any) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=kind,
        name=ref,
        context=context,
        requisite_stage_ref_ids=after or set(),
        tasks=[TaskExecution.create(ref, kind, stage_start=True, stage_end=True)],
    )


class ReportTask(SubWorkflowTask):
    """Builds the child from what the parent knows, as the original's examples do."""

    def execute(self, stage: StageExecution) -> TaskResult:
        if "_sub_workflow_config" not in stage.context:
            stage.context["_sub_workflow_config"] = {
                "name": "write report",
                "application": "reports",
                "stages": [
                    StageExecution(
                        ref_id="draft",
                        type="draft",
                        name="Draft",
                        context={"topic": stage.context["topic"]},
                        tasks=[
                            TaskExecution.create("draft", "draft", stage_start=True, stage_end=True)
                        ],
                    )
                ],
                "context": {"audience": "board"},
            }
            stage.context["_sub_workflow_poll_seconds"] = 0.02
        return super().execute(stage)


def test_a_child_built_from_stage_objects_inside_execute_runs_and_its_outputs_flow_on(
    make_engine: MakeEngine,
) -> None:
    engine = make_engine()
    engine.registry.register("report", ReportTask)
    engine.registry.register(
        "draft",
        lambda s: TaskResult.success(
            outputs={"report": f"{s.context['topic']} for the {s.context['audience']}"}
        ),
    )
    seen: list[Any] = []

    def publish(s: StageExecution) -> TaskResult:
        seen.append(s.context.get("sub_workflow_outputs"))
        return TaskResult.success()

    engine.registry.register("publish", publish)
    wf = Workflow.create(
        application="demo",
        name="parent",
        stages=[
            stage("report", "report", topic="Q3 numbers"),
            stage("publish", "publish", {"report"}),
        ],
    )
    done = engine.run(wf)
    assert done.status is S.SUCCEEDED, done.error
    outputs = done.stage_by_ref_id("report").outputs
    assert outputs["sub_workflow_status"] == "SUCCEEDED"
    assert outputs["sub_workflow_outputs"] == {"report": "Q3 numbers for the board"}
    child = engine.store.retrieve(outputs["sub_workflow_id"])
    assert child.name == "write report"
    assert child.application == "reports"
    assert seen == [{"report": "Q3 numbers for the board"}]
