"""A child workflow run and awaited as one stage (SubWorkflowTask), nested two levels.

enrich ══> [child: double ── inner ══> [grandchild: add_one]] ── report
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    StageExecution,
    Workflow,
    WorkflowEngine,
    sub_workflow_config,
)


def stage(ref: str, task: str, requires: set[str] | None = None, **flow: Any) -> StageExecution:
    return StageExecution.for_task(ref, task, requisite_stage_ref_ids=requires or set(), **flow)


def child_stage(ref: str, name: str, stages: list[StageExecution]) -> StageExecution:
    """A stage that runs ``stages`` as a child workflow and waits for it."""
    context = {
        "_sub_workflow_config": sub_workflow_config(name, stages, context={"n": 21}),
        "_sub_workflow_poll_seconds": 0.05,  # how often the parent checks the child
    }
    return stage(ref, "sub_workflow", context=context)


def main(db_url: str) -> Workflow:
    with WorkflowEngine(db_url) as engine:
        engine.register("double", lambda s: {"doubled": s.context["n"] * 2})
        engine.register("add_one", lambda s: {"plus_one": s.context["n"] + 1})
        engine.register("report", lambda s: {"child_said": s.context["sub_workflow_outputs"]})

        grandchild = [stage("add_one", "add_one")]
        child = [stage("double", "double"), child_stage("inner", "grandchild", grandchild)]
        workflow = Workflow.create(
            "docs",
            "sub-workflow",
            [child_stage("enrich", "child", child), stage("report", "report", {"enrich"})],
        )
        return engine.run(workflow, timeout=30)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("enrich").outputs)
