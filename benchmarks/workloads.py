"""Benchmark workloads: graphs of no-op stages (and one agent loop), and how to build them.

Every stage has one task, registered as a plain function that returns
``TaskResult.success()`` and bumps :data:`harness.RUNS` (the loop stages also publish or
read a pass counter). How a workload is run and timed is in ``measure.py``;
``workers_200`` (several worker processes) is in ``workers.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from agent import AGENT_STEPS_PER_STAGE, AGENT_WORKFLOWS, agent_workflows, register_agent
from harness import RUNS, TaskFunction

from stabilize.models import StageExecution, TaskExecution, Workflow
from stabilize.models.stage import MultiInstanceConfig
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult


@dataclass(frozen=True)
class Workload:
    """A named benchmark: how to build its workflows and how many stage runs to expect.

    ``expected_runs`` counts task executions (:data:`harness.RUNS`); for most workloads
    that is one per stage run. ``stages`` (default: ``expected_runs``) is the number of
    stage runs the per-stage figures divide by, for workloads whose stages take several
    executions (the agent loop). ``register`` adds the workload's own tasks to the
    processor's registry; it raises :class:`harness.WorkloadSkipped` when the engine lacks them.
    """

    name: str
    description: str
    build: Callable[[], list[Workflow]]
    expected_runs: int
    width: int | None = None  # fan-out width, for the cost-per-stage-vs-width series
    stages: int | None = None
    register: Callable[[TaskRegistry], None] | None = None

    @property
    def stage_runs(self) -> int:
        return self.expected_runs if self.stages is None else self.stages


# -- tasks ----------------------------------------------------------------------------


def _noop(stage: StageExecution) -> TaskResult:
    RUNS.bump()
    return TaskResult.success()


def _loop_head(stage: StageExecution) -> TaskResult:
    """Stage ``a`` of the loop: publish which pass this is (1 unless a jump set it)."""
    RUNS.bump()
    return TaskResult.success(outputs={"pass": int(stage.context.get("pass", 1))})


LOOP_PASSES = 3


def _loop_tail(stage: StageExecution) -> TaskResult:
    """Stage ``c`` of the loop: jump back to ``a`` until the pass counter reaches 3."""
    RUNS.bump()
    current = int(stage.context["pass"])
    if current < LOOP_PASSES:
        return TaskResult.jump_to("a", context={"pass": current + 1})
    return TaskResult.success()


TASKS: dict[str, TaskFunction] = {
    "bench_noop": _noop,
    "bench_loop_head": _loop_head,
    "bench_loop_tail": _loop_tail,
}


# -- graphs ---------------------------------------------------------------------------


def _stage(ref: str, requires: set[str] | None = None, task: str = "bench_noop") -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task, stage_start=True, stage_end=True)],
    )


def _workflow(name: str, stages: list[StageExecution]) -> Workflow:
    return Workflow.create(application="bench", name=name, stages=stages)


def linear(length: int, task: str = "bench_noop") -> Workflow:
    """A chain s0 -> s1 -> ... of ``length`` stages."""
    stages = [_stage("s0", task=task)]
    stages += [_stage(f"s{i}", {f"s{i - 1}"}, task=task) for i in range(1, length)]
    return _workflow(f"linear-{length}", stages)


def fan_out(width: int) -> Workflow:
    """``root`` -> ``width`` parallel stages -> ``join``."""
    branches = [f"b{i}" for i in range(width)]
    stages = [_stage("root")]
    stages += [_stage(ref, {"root"}) for ref in branches]
    stages.append(_stage("join", set(branches)))
    return _workflow(f"fanout-{width}", stages)


def independent(count: int) -> Workflow:
    """One workflow of ``count`` stages with no requisites (all ready at once)."""
    return _workflow(f"independent-{count}", [_stage(f"s{i}") for i in range(count)])


def jump_loop() -> Workflow:
    """a -> b -> c, where c jumps back to a until the pass counter reaches 3."""
    stages = [
        _stage("a", task="bench_loop_head"),
        _stage("b", {"a"}),
        _stage("c", {"b"}, task="bench_loop_tail"),
    ]
    return _workflow("jump-loop", stages)


def dynamic(count: int) -> Workflow:
    """One stage fanned out at run time over a list of ``count`` items in its context.

    The stage's ``mi_config`` makes the engine create one instance per item (each runs the
    no-op task once); the stage completes when every instance has.
    """
    each = StageExecution(
        ref_id="each",
        type="bench_noop",
        name="each",
        context={"items": list(range(count))},
        mi_config=MultiInstanceConfig(items_key="items"),
        tasks=[TaskExecution.create("each", "bench_noop", stage_start=True, stage_end=True)],
    )
    return _workflow(f"dynamic-{count}", [each])


def _fan_out_workload(width: int, description: str) -> Workload:
    return Workload(
        f"fanout_{width}",
        description,
        lambda: [fan_out(width)],
        width + 2,
        width=width,
    )


def _chain_workload(length: int, description: str) -> Workload:
    return Workload(f"chain_{length}", description, lambda: [linear(length)], length)


def _dynamic_workload(count: int, description: str) -> Workload:
    return Workload(f"dynamic_{count}", description, lambda: [dynamic(count)], count)


WORKLOADS: list[Workload] = [
    Workload(
        "linear_100",
        "1 workflow: a chain of 100 stages",
        lambda: [linear(100)],
        100,
    ),
    _fan_out_workload(200, "1 workflow: root -> 200 parallel stages -> join"),
    Workload(
        "independent_50x5",
        "50 workflows, each a chain of 5 stages",
        lambda: [linear(5) for _ in range(50)],
        50 * 5,
    ),
    Workload(
        "jump_loop_20x3",
        "20 workflows a -> b -> c, c jumps back to a until 3 passes (9 stage runs each)",
        lambda: [jump_loop() for _ in range(20)],
        20 * 3 * LOOP_PASSES,
    ),
    _fan_out_workload(100, "width series: root -> 100 parallel stages -> join"),
    _fan_out_workload(400, "width series: root -> 400 parallel stages -> join"),
]

# Run with --only (or --series), not by default: wide single workflows (issue 13), the size
# series and the further throughput workloads (issue 19).
EXTRA_WORKLOADS: list[Workload] = [
    _fan_out_workload(10_000, "wide: root -> 10,000 parallel stages -> join"),
    Workload(
        "independent_10000",
        "wide: 1 workflow of 10,000 stages without requisites",
        lambda: [independent(10_000)],
        10_000,
    ),
    Workload(
        "independent_200",
        "wide, for scale: 1 workflow of 200 stages without requisites",
        lambda: [independent(200)],
        200,
    ),
    _fan_out_workload(4_000, "wide: root -> 4,000 parallel stages -> join"),
    Workload(
        "independent_4000",
        "wide: 1 workflow of 4,000 stages without requisites",
        lambda: [independent(4_000)],
        4_000,
    ),
    _chain_workload(100, "size series: 1 workflow, a chain of 100 stages"),
    _chain_workload(2_000, "size series: 1 workflow, a chain of 2,000 stages"),
    _dynamic_workload(100, "size series: 1 stage fanned out over 100 items (mi_config)"),
    _dynamic_workload(10_000, "size series: 1 stage fanned out over 10,000 items (mi_config)"),
    Workload(
        "many_small_500x3",
        "500 workflows, each a chain of 3 stages",
        lambda: [linear(3) for _ in range(500)],
        500 * 3,
    ),
    Workload(
        "agent_loop_20",
        "20 workflows, each 1 AgentLoopTask stage: 3 tool calls, then an answer "
        "(offline scripted model)",
        agent_workflows,
        AGENT_WORKFLOWS * AGENT_STEPS_PER_STAGE,
        stages=AGENT_WORKFLOWS,
        register=register_agent,
    ),
]

BY_NAME = {w.name: w for w in [*WORKLOADS, *EXTRA_WORKLOADS]}

# The size series (issue 19): each pair is run and the large one's cost per stage compared
# with the small one's.
SERIES: list[tuple[str, str]] = [
    ("chain_100", "chain_2000"),
    ("fanout_100", "fanout_10000"),
    ("dynamic_100", "dynamic_10000"),
]

# The multi-process throughput workload: 200 small workflows of 5 single-task stages each,
# half chains (s0 -> ... -> s4), half small fan-outs (root -> 3 parallel stages -> join).
WORKERS_WORKLOAD = "workers_200"
WORKERS_WORKFLOWS = 200
WORKERS_STAGES_PER_WORKFLOW = 5


def workers_200() -> list[Workflow]:
    """The 200 workflows of ``workers_200`` (chains and fan-outs alternate)."""
    return [linear(5) if i % 2 == 0 else fan_out(3) for i in range(WORKERS_WORKFLOWS)]
