"""A child workflow run and awaited as one stage (SubWorkflowTask), nested two levels.

enrich ══> [child: double ── inner ══> [grandchild: add_one]] ── report
"""

from __future__ import annotations

from typing import Any

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
    sub_workflow_config,
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


def child_stage(ref: str, name: str, stages: list[StageExecution]) -> StageExecution:
    """A stage that runs ``stages`` as a child workflow and waits for it."""
    context = {
        "_sub_workflow_config": sub_workflow_config(name, stages, context={"n": 21}),
        "_sub_workflow_poll_seconds": 0.05,  # how often the parent checks the child
    }
    return stage(ref, "sub_workflow", context=context)


def main(db_url: str) -> Workflow:
    store = SqliteWorkflowStore(db_url, create_tables=True)
    queue = SqliteQueue(db_url)
    queue._create_table()
    registry = TaskRegistry()
    registry.register("double", lambda s: {"doubled": s.context["n"] * 2})
    registry.register("add_one", lambda s: {"plus_one": s.context["n"] + 1})
    registry.register("report", lambda s: {"child_said": s.context["sub_workflow_outputs"]})
    processor = QueueProcessor(queue, store=store, task_registry=registry)

    grandchild = [stage("add_one", "add_one")]
    child = [stage("double", "double"), child_stage("inner", "grandchild", grandchild)]
    workflow = Workflow.create(
        "docs",
        "sub-workflow",
        [child_stage("enrich", "child", child), stage("report", "report", {"enrich"})],
    )
    Orchestrator(queue, store=store).start(workflow)
    processor.process_all(timeout=30)
    return store.retrieve(workflow.id)


if __name__ == "__main__":
    result = main("sqlite:///control_flow_demo.db")
    print(result.status, result.stage_by_ref_id("enrich").outputs)
