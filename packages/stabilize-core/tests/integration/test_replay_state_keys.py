"""rebuild_workflow_state answers the keys the original package's dict had (issue 14)."""

from __future__ import annotations

from typing import Any

from stabilize import StageExecution, TaskExecution, TaskRegistry, TaskResult, Workflow
from stabilize.events import EventReplayer, configure_event_sourcing
from stabilize.models.workflow import Workflow as TypedWorkflow


def stage(ref: str, after: tuple[str, ...] = ()) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="work",
        name=ref,
        requisite_stage_ref_ids=set(after),
        tasks=[TaskExecution.create(ref, "work", stage_start=True, stage_end=True)],
    )


def test_the_original_keys_and_the_typed_workflow(make_engine: Any, backend: Any) -> None:
    events = backend.event_store()
    configure_event_sourcing(events)
    registry = TaskRegistry()
    registry.register("work", lambda s: TaskResult.success(outputs={f"{s.ref_id}_out": 1}))
    engine = make_engine(registry=registry)
    wf = Workflow.create("replay", "keys", [stage("a"), stage("b", ("a",))])
    engine.run(wf)
    stored = engine.store.retrieve(wf.id)
    state = EventReplayer(events).rebuild_workflow_state(wf.id)

    # What code written for the original indexes:
    assert state["status"] == "SUCCEEDED"
    assert state["workflow_id"] == wf.id
    assert (state["application"], state["name"]) == ("replay", "keys")
    assert state["end_time"] is not None
    assert state["end_time"].startswith("20")
    a = stored.stage_by_ref_id("a")
    assert state["stages"][a.id]["status"] == "SUCCEEDED"
    assert state["stages"][a.id]["ref_id"] == "a"
    assert state["stages"][a.id]["outputs"] == {"a_out": 1}
    assert state["tasks"][a.tasks[0].id]["stage_id"] == a.id
    assert state["tasks"][a.tasks[0].id]["status"] == "SUCCEEDED"
    assert "stages" in state
    assert "nonsense" not in state
    assert state.get("nonsense", 7) == 7
    assert set(dict(state)) == set(state.to_state())
    # ... and it is still the typed workflow.
    assert isinstance(state, TypedWorkflow)
    assert state.stage_by_ref_id("b").outputs == {"b_out": 1}

    early = EventReplayer(events).rebuild_workflow_state(wf.id, as_of_sequence=1)
    assert early["status"] == "NOT_STARTED"
    assert early["end_time"] is None
