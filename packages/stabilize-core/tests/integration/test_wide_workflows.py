"""Wide workflows (issue 13): thousands of stages in one workflow must not stall a worker.

Before the fix, 4,000 independent stages crawled (the cancellation check reloaded and
re-indexed the whole workflow, with a topological sort costing O(n²), as often as every
step). These tests only need to finish: the per-test hang guard is what fails them.
"""

from __future__ import annotations

from collections import Counter

from stabilize import (
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    Workflow,
    WorkflowStatus,
)
from stabilize.queue.processor.config import QueueProcessorConfig

S = WorkflowStatus


def noop_stage(ref: str, requires: set[str] | None = None) -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type="noop",
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, "noop", stage_start=True, stage_end=True)],
    )


def counting_registry(runs: Counter[str]) -> TaskRegistry:
    registry = TaskRegistry()

    def noop(stage: StageExecution) -> TaskResult:
        runs[stage.ref_id] += 1
        return TaskResult.success(outputs={stage.ref_id: True})

    registry.register("noop", noop)
    return registry


def test_three_thousand_independent_stages_all_succeed(make_engine):
    runs: Counter[str] = Counter()
    engine = make_engine(registry=counting_registry(runs))
    refs = [f"s{i}" for i in range(3000)]
    wf = Workflow.create("tests", "wide", [noop_stage(ref) for ref in refs])

    result = engine.run(wf, timeout=55)

    assert result.status is S.SUCCEEDED
    assert [s.status for s in result.stages] == [S.SUCCEEDED] * len(refs)
    assert all(s.tasks[0].status is S.SUCCEEDED for s in result.stages)
    assert runs == Counter(dict.fromkeys(refs, 1))
    assert engine.queue.size() == 0


def test_wide_fan_out_with_a_cancellation_check_every_step_succeeds(make_engine):
    # A check on every step is the worst case for its cost: it used to load the whole
    # workflow each time.
    runs: Counter[str] = Counter()
    config = QueueProcessorConfig(poll_frequency_ms=10, cancel_check_interval_seconds=0)
    engine = make_engine(config=config, registry=counting_registry(runs))
    branches = [f"b{i}" for i in range(2000)]
    stages = [noop_stage("root")]
    stages += [noop_stage(ref, {"root"}) for ref in branches]
    stages.append(noop_stage("join", set(branches)))

    result = engine.run(Workflow.create("tests", "fan-out", stages), timeout=55)

    assert result.status is S.SUCCEEDED
    assert {s.status for s in result.stages} == {S.SUCCEEDED}
    assert runs == Counter(dict.fromkeys(["root", *branches, "join"], 1))
    join = result.stage_by_ref_id("join")
    assert join.start_time is not None
    assert all(
        s.end_time is not None and s.end_time <= join.start_time
        for s in result.stages
        if s.ref_id in branches
    )
