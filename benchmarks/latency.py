"""``latency``: how quickly a worker that runs as a service reacts, idle between workflows.

One processor runs in the background (``QueueProcessor.start()``, ``poll_frequency_ms``
from ``--poll-ms``, default 50 as in the engine). Small workflows (a chain of 3 stages) are
submitted one at a time: submit, wait until it finished, stay idle ~20 ms, submit the
next. Measured:

- **hand-off**: from the commit of a task's result to the start of the next stage's task.
  The backend's ``transaction()`` is wrapped and every successful commit's end is stamped
  with ``time.perf_counter()``; each task stamps its start. The enabling commit of a task
  start is the last commit that ended before it: with one worker and a serial chain
  nothing else commits in between, so that is exactly the commit of the previous
  stage's result (which also claims the next task in the same transaction).
- **submit -> first task**: from just before ``store.store`` to the first task's start;
  split into the submission itself (``store`` + ``orchestrator.start``, two commits) and
  what follows it (the idle worker noticing the work and claiming it).
"""

from __future__ import annotations

import bisect
import math
import statistics
import time
from typing import Any

from harness import (
    PROCESS_ALL_TIMEOUT_S,
    RUNS,
    Target,
    current_rss_kib,
    database_info,
    fresh_database,
)
from measure import setup_for, start_service
from report import describe_env
from workloads import linear

from stabilize.models import StageExecution, WorkflowStatus
from stabilize.tasks.result import TaskResult

LATENCY_WORKLOAD = "latency"
LATENCY_STAGES = 3
LATENCY_WORKFLOWS = 200
LATENCY_IDLE_MS = 20.0
LATENCY_WARMUP = 5  # workflows run first and left out of the figures
FINISH_CHECK_S = 0.001
FIGURES = {
    "handoff_ms": "commit -> next stage's task starts",
    "submit_to_start_ms": "submit -> first task starts",
    "wake_ms": "  after the submission returned",
    "submit_ms": "  the submission (store + start)",
}

_STARTS: list[float] = []


def _stamped(stage: StageExecution) -> TaskResult:
    _STARTS.append(time.perf_counter())
    RUNS.bump()
    return TaskResult.success()


def handoffs_ms(commits: list[float], starts: list[tuple[float, float]]) -> list[float]:
    """For each (previous task's start, task's start): ms from the enabling commit's end.

    ``commits`` are the commit ends in ascending order. The enabling commit of a start is
    the last commit that ended before it, and it must have ended after the previous
    task's start (or the chain's hand-off was not a commit at all).

    Raises:
        ValueError: no commit ended between the two starts of a pair.
    """
    out = []
    for previous, start in starts:
        at = bisect.bisect_left(commits, start) - 1
        if at < 0 or commits[at] < previous:
            raise ValueError(f"no commit between the task starts at {previous} and {start}")
        out.append(1000 * (start - commits[at]))
    return out


def run_latency(target: Target, poll_ms: int, workflows: int, idle_ms: float) -> dict[str, Any]:
    """One repetition: ``workflows`` chains of 3 stages, one at a time, on a fresh database."""
    with fresh_database(target) as db:
        setup = setup_for(db, poll_ms)
        setup.processor.task_registry.register("bench_stamp", _stamped)
        backend = setup.store.backend
        commits = setup.counter.stamp_commits()
        start_service(setup)
        rss_before = current_rss_kib()
        samples: dict[str, list[float]] = {key: [] for key in FIGURES}
        handoffs: list[tuple[float, float]] = []
        cpu_before = time.process_time()
        for i in range(LATENCY_WARMUP + workflows):
            wf = linear(LATENCY_STAGES, task="bench_stamp")
            time.sleep(idle_ms / 1000)
            RUNS.value = 0
            first = len(_STARTS)
            submitted = time.perf_counter()
            setup.store.store(wf)
            setup.orchestrator.start(wf)
            returned = time.perf_counter()
            if not RUNS.wait_for(LATENCY_STAGES, PROCESS_ALL_TIMEOUT_S):
                raise RuntimeError(f"latency: workflow {i} ran {RUNS.value} of 3 tasks")
            deadline = time.monotonic() + PROCESS_ALL_TIMEOUT_S
            while not (status := setup.store.retrieve(wf.id).status).is_complete:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"latency: workflow {i} did not finish")
                time.sleep(FINISH_CHECK_S)
            if status is not WorkflowStatus.SUCCEEDED:
                raise RuntimeError(f"latency: workflow {i} ended {status.value}")
            if i < LATENCY_WARMUP:
                continue
            starts = _STARTS[first : first + LATENCY_STAGES]
            samples["submit_to_start_ms"].append(1000 * (starts[0] - submitted))
            samples["wake_ms"].append(1000 * (starts[0] - returned))
            samples["submit_ms"].append(1000 * (returned - submitted))
            handoffs.extend((starts[k - 1], starts[k]) for k in range(1, LATENCY_STAGES))
        cpu = time.process_time() - cpu_before
        setup.processor.stop()
        samples["handoff_ms"] = handoffs_ms(commits, handoffs)
        result = {
            "workload": LATENCY_WORKLOAD,
            "mode": "service",
            "workflows": workflows,
            "stages_per_workflow": LATENCY_STAGES,
            "idle_ms": idle_ms,
            "poll_ms": poll_ms,
            "warmup_workflows": LATENCY_WARMUP,
            "cpu_s": cpu,
            "rss_before_kib": rss_before,
            "samples": samples,
            **database_info(backend),
        }
        backend.close()
    return result


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p90, p99 (nearest rank), max and mean of ``values``, and how many there are."""
    ordered = sorted(values)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * n) - 1)]

    return {
        "n": n,
        "p50": rank(0.50),
        "p90": rank(0.90),
        "p99": rank(0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }


def summarise_latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The percentiles of every figure over the samples of all repetitions together."""
    first = runs[0]
    figures = {key: percentiles([v for r in runs for v in r["samples"][key]]) for key in FIGURES}
    return {
        "workload": LATENCY_WORKLOAD,
        "mode": "service",
        "workflows": first["workflows"],
        "stages_per_workflow": first["stages_per_workflow"],
        "idle_ms": first["idle_ms"],
        "poll_ms": first["poll_ms"],
        "repeats": len(runs),
        "peak_rss_mb": max(r["peak_rss_kib"] for r in runs) / 1024,
        **figures,
        "runs": runs,
    }


def print_latency(summary: dict[str, Any], env: dict[str, Any]) -> None:
    print(
        f"\n{LATENCY_WORKLOAD} — one worker in service mode (start(), "
        f"poll_frequency_ms={summary['poll_ms']}), {summary['workflows']} workflows of a "
        f"{summary['stages_per_workflow']}-stage chain submitted one at a time, "
        f"{summary['idle_ms']:g} ms idle between them, {describe_env(env)}, "
        f"{summary['repeats']} repetition(s), samples pooled\n"
    )
    header = f"{'figure':<38} {'n':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}"
    print(header)
    print("-" * len(header))
    for key, label in FIGURES.items():
        f = summary[key]
        print(
            f"{label:<38} {f['n']:>6} {f['p50']:>8.2f} {f['p90']:>8.2f} {f['p99']:>8.2f} "
            f"{f['max']:>8.2f}"
        )
    print(
        "hand-off = the start of a task - the end of the last commit before it (the previous "
        "stage's result, committed with the claim of this task); submit = just before "
        "store.store -> the first task's start."
    )
