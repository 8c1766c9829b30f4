"""A stage run again (a jump back, a restart) starts without the state of its last run."""

from __future__ import annotations

from typing import Any

from stabilize import StageExecution, TaskExecution, TaskResult, Workflow, WorkflowStatus

S = WorkflowStatus


def test_a_gate_run_again_waits_for_a_new_signal(make_engine):
    engine = make_engine()
    seen: list[Any] = []
    passes: list[int] = []

    def gate(stage: StageExecution) -> TaskResult:
        if "_signal_name" not in stage.context:
            return TaskResult.suspend()
        seen.append(stage.context["_signal_data"])
        return TaskResult.success()

    def loop(stage: StageExecution) -> TaskResult:
        passes.append(1)
        return TaskResult.jump_to("gate") if len(passes) == 1 else TaskResult.success()

    engine.registry.register("gate", gate)
    engine.registry.register("loop", loop)
    wf = Workflow.create(
        application="tests",
        name="rerun",
        stages=[
            StageExecution(
                ref_id="gate", type="gate", name="gate", tasks=[TaskExecution.create("g", "gate")]
            ),
            StageExecution(
                ref_id="loop",
                type="loop",
                name="loop",
                requisite_stage_ref_ids={"gate"},
                tasks=[TaskExecution.create("l", "loop")],
            ),
        ],
    )
    engine.store.store(wf)
    engine.orchestrator.start(wf)
    engine.processor.process_all(timeout=30)
    engine.orchestrator.signal(wf.id, "gate", "go", {"n": 1}, user="alice")
    engine.processor.process_all(timeout=30)

    # Back at the gate: the first signal belongs to the first run; it waits again.
    again = engine.store.retrieve(wf.id).stage_by_ref_id("gate")
    assert again.status is S.SUSPENDED
    assert not {"_signal_name", "_signal_data", "_signal_user"} & set(again.context)
    assert again.signal_user is None

    engine.orchestrator.signal(wf.id, "gate", "go", {"n": 2})
    engine.processor.process_all(timeout=30)
    assert engine.store.retrieve(wf.id).status is S.SUCCEEDED
    assert seen == [{"n": 1}, {"n": 2}]
