"""Generated workflows of the simulation and the deterministic tasks they run.

A workflow is drawn from a seeded ``random.Random``: a random DAG whose stages join in
every way the engine knows (AND, OR, k-of-n quorum, first-wins, multi-merge, with the
IGNORE and CANCEL straggler policies), tasks that succeed, fail softly or for good, raise
transient errors a few times, wait for a signal (with or without a timer), and a bounded
loop (``jump_to`` an ancestor). Ids are derived from the seed, so that two runs of one
seed store the same rows.

Each task is a pure function of what it receives: its stage's own context says how it
behaves. Every execution calls ``record`` first, which is how the simulation counts
executions across crashes.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stabilize import (
    StageExecution,
    TaskExecution,
    TaskRegistry,
    TaskResult,
    TransientError,
    Workflow,
)
from stabilize.models.stage import JoinType, MultiInstanceConfig, StragglerPolicy
from stabilize.models.status import WorkflowStatus
from stabilize.tasks.sub_workflow import SubWorkflowTask, sub_workflow_config

OK = "sim_ok"
SOFT = "sim_soft"
HARD = "sim_hard"
FLAKY = "sim_flaky"
SIGNAL = "sim_signal"
LOOP = "sim_loop"
SUB = "sim_sub"

BEHAVIOURS = [(OK, 70), (FLAKY, 12), (SOFT, 6), (HARD, 3), (SIGNAL, 6)]
"""Task kinds and their weights when a task is drawn."""

QUORUM_JOINS = (JoinType.N_OF_M, JoinType.DISCRIMINATOR)
JOINS = [
    (JoinType.AND, 4),
    (JoinType.OR, 2),
    (JoinType.N_OF_M, 3),
    (JoinType.DISCRIMINATOR, 2),
    (JoinType.MULTI_MERGE, 1),
]


@dataclass
class Plan:
    """What the generator decided for one workflow, for the checks that follow the run."""

    workflow: Workflow
    may_fail: bool
    """A task fails for good, a deadline may fire, or a transient error outlasts its retries."""
    has_loop: bool
    signals: set[str] = field(default_factory=set)
    """Ref ids of the stages that suspend until a signal."""
    fan_outs: int = 0
    sub_workflows: int = 0


def _pick(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    total = sum(w for _, w in weighted)
    draw = rng.randrange(total)
    for value, weight in weighted:
        if draw < weight:
            return value
        draw -= weight
    raise AssertionError("unreachable")


def generate(rng: random.Random, workflow_id: str, transient_limit: int) -> Plan:
    """A random workflow (1-8 stages); ``transient_limit``: the processor's retry budget."""
    count = rng.randint(1, 8)
    stages: list[StageExecution] = []
    may_fail = False
    signals: set[str] = set()
    fan_outs = subs = 0
    for i in range(count):
        ref = f"s{i}"
        width = min(i, rng.choice([0, 1, 1, 1, 2, 2, 3]))
        requires = set(rng.sample([s.ref_id for s in stages], width)) if width else set()
        flow: dict[str, object] = {}
        if len(requires) > 1:
            join = JoinType(_pick(rng, [(j.value, w) for j, w in JOINS]))
            flow["join_type"] = join
            if join is JoinType.N_OF_M:
                flow["join_threshold"] = rng.randint(1, len(requires))
            if join in QUORUM_JOINS:
                flow["straggler_policy"] = rng.choice(
                    [StragglerPolicy.IGNORE, StragglerPolicy.CANCEL]
                )
        context: dict[str, object] = {}
        tasks = []
        for t in range(rng.choice([1, 1, 1, 2])):
            kind = _pick(rng, BEHAVIOURS)
            if kind == FLAKY:
                failures = rng.randint(1, transient_limit)
                context[f"fail_{t}"] = failures
                may_fail = may_fail or failures >= transient_limit
            elif kind == HARD:
                may_fail = True
            elif kind == SIGNAL:
                if ref in signals:
                    kind = OK  # one suspension per stage keeps the signal bookkeeping simple
                else:
                    signals.add(ref)
                    if rng.random() < 0.3:
                        context["timer_s"] = rng.choice([0, 5, 40])
            tasks.append(
                TaskExecution(id=f"{workflow_id}-{ref}-t{t}", name=f"t{t}", implementing_class=kind)
            )
        if rng.random() < 0.08:
            flow["deadline_seconds"] = float(rng.choice([20, 90, 300]))
            may_fail = True
        draw = rng.random()
        if draw < 0.1:
            items = list(range(rng.randint(0, 3)))
            context["items"] = items
            flow["mi_config"] = MultiInstanceConfig(
                items_key="items",
                max_concurrency=rng.choice([0, 0, 1, 2]),
                join_threshold=rng.randint(0, len(items)),
            )
            fan_outs += 1
        elif draw < 0.16:
            child, child_may_fail = _child(rng, f"{workflow_id}-{ref}", transient_limit)
            context["_sub_workflow_config"] = child
            context["_sub_workflow_poll_seconds"] = rng.choice([1, 10])
            tasks = [
                TaskExecution(id=f"{workflow_id}-{ref}-sub", name="sub", implementing_class=SUB)
            ]
            signals.discard(ref)
            may_fail = may_fail or child_may_fail
            subs += 1
        stages.append(
            StageExecution(
                id=f"{workflow_id}-{ref}",
                ref_id=ref,
                type="sim",
                name=ref,
                context=context,
                requisite_stage_ref_ids=requires,
                tasks=tasks,
                **flow,  # type: ignore[arg-type]
            )
        )
    # A quorum join that cancels its stragglers may starve another quorum join of the
    # successes it needs, which then fails: the engine's rule, not a fault.
    policies = [s.straggler_policy for s in stages if s.join_type in QUORUM_JOINS]
    if StragglerPolicy.CANCEL in policies and len(policies) > 1:
        may_fail = True
    has_loop = False
    looping = [s for s in stages if s.requisite_stage_ref_ids and s.mi_config is None]
    if looping and rng.random() < 0.3:
        stage = rng.choice(looping)
        ancestors = sorted(_ancestors(stages, stage.ref_id))
        stage.context["loop_to"] = rng.choice(ancestors)
        stage.context["passes"] = rng.randint(1, 2)
        stage.tasks.append(
            TaskExecution(
                id=f"{workflow_id}-{stage.ref_id}-loop", name="loop", implementing_class=LOOP
            )
        )
        has_loop = True
    wf = Workflow.create("sim", workflow_id, stages)
    wf.id = workflow_id
    return Plan(wf, may_fail, has_loop, signals, fan_outs, subs)


def _child(rng: random.Random, prefix: str, transient_limit: int) -> tuple[dict[str, Any], bool]:
    """A small chain of stages for a sub-workflow, and whether it may fail."""
    stages = []
    may_fail = False
    for i in range(rng.randint(1, 3)):
        kind = _pick(rng, [(OK, 8), (FLAKY, 2), (HARD, 1)])
        context: dict[str, Any] = {}
        if kind == FLAKY:
            context["fail_0"] = rng.randint(1, transient_limit)
            may_fail = may_fail or context["fail_0"] >= transient_limit
        may_fail = may_fail or kind == HARD
        stages.append(
            StageExecution(
                id=f"{prefix}-c{i}",
                ref_id=f"c{i}",
                type="sim",
                name=f"c{i}",
                context=context,
                requisite_stage_ref_ids={f"c{i - 1}"} if i else set(),
                tasks=[TaskExecution(id=f"{prefix}-c{i}", name="t0", implementing_class=kind)],
            )
        )
    return sub_workflow_config(f"{prefix} child", stages), may_fail


def _ancestors(stages: list[StageExecution], ref: str) -> set[str]:
    by_ref = {s.ref_id: s for s in stages}
    found: set[str] = set()
    todo = list(by_ref[ref].requisite_stage_ref_ids)
    while todo:
        up = todo.pop()
        if up not in found:
            found.add(up)
            todo.extend(by_ref[up].requisite_stage_ref_ids)
    return found


def _task_number(stage: StageExecution) -> int:
    running = [t for t in stage.tasks if t.status is WorkflowStatus.RUNNING]
    assert len(running) == 1, f"stage {stage.ref_id} runs {len(running)} tasks at once"
    return stage.tasks.index(running[0])


def registry(record: Callable[[StageExecution], None]) -> TaskRegistry:
    """The simulation's tasks; each calls ``record(stage)`` when it starts."""

    def ok(stage: StageExecution) -> TaskResult:
        record(stage)
        return TaskResult.success(outputs={f"{stage.ref_id}_t{_task_number(stage)}": "ok"})

    def soft(stage: StageExecution) -> TaskResult:
        record(stage)
        return TaskResult.failed_continue(f"{stage.ref_id} failed softly")

    def hard(stage: StageExecution) -> TaskResult:
        record(stage)
        return TaskResult.terminal(f"{stage.ref_id} failed")

    def flaky(stage: StageExecution) -> TaskResult:
        record(stage)
        number = _task_number(stage)
        retries = stage.tasks[number].retry_count
        if retries < int(stage.context[f"fail_{number}"]):
            raise TransientError(f"{stage.ref_id} attempt {retries} failed", retry_after=2.0)
        return TaskResult.success(outputs={f"{stage.ref_id}_t{number}": retries})

    def signal(stage: StageExecution) -> TaskResult:
        record(stage)
        name = stage.context.get("_signal_name")
        if name is None:
            return TaskResult.suspend(signal_timeout=stage.context.get("timer_s"))
        return TaskResult.success(outputs={f"{stage.ref_id}_signal": name})

    def loop(stage: StageExecution) -> TaskResult:
        record(stage)
        if stage.jump_count < int(stage.context["passes"]):
            return TaskResult.jump_to(str(stage.context["loop_to"]))
        return TaskResult.success()

    class Sub(SubWorkflowTask):
        def execute(self, stage: StageExecution) -> TaskResult:
            record(stage)
            return super().execute(stage)

    tasks = TaskRegistry()
    tasks.register(SUB, Sub())
    for name, fn in [
        (OK, ok),
        (SOFT, soft),
        (HARD, hard),
        (FLAKY, flaky),
        (SIGNAL, signal),
        (LOOP, loop),
    ]:
        tasks.register(name, fn)
    return tasks
