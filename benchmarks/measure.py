"""One measured run of a workload, in drain mode or in service mode.

- **drain** (the default): the measured region is ``store.store`` + ``orchestrator.start``
  for every workflow, then one ``QueueProcessor.process_all()``.
- **service**: the processor already runs in the background (``QueueProcessor.start()``,
  idle); the measured region is from the first ``store.store`` until the commit that
  finished the last workflow, the workflows being submitted while the processor works.

The workflows are built before the clock starts and checked after it stops.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import (
    POLL_FREQUENCY_MS,
    PROCESS_ALL_TIMEOUT_S,
    RUNS,
    Database,
    Setup,
    Target,
    count_finished,
    current_rss_kib,
    database_info,
    fresh_database,
    make_setup,
    server_cpu,
)
from workloads import TASKS, Workload, workers_200

from stabilize.models import Workflow, WorkflowStatus

MODES = ("drain", "service")
# Service mode: how often the waiting thread checks the database for finished workflows
# while tasks still run (a failed workflow would otherwise never let it return), and once
# every task has run.
SERVICE_CHECK_S = 0.05
SERVICE_FINAL_CHECK_S = 0.001
SERVICE_START_TIMEOUT_S = 10.0


def setup_for(db: Database, poll_ms: int = POLL_FREQUENCY_MS) -> Setup:
    """:func:`harness.make_setup` with the workloads' tasks registered."""
    return make_setup(db, TASKS, poll_ms)


def submit(setup: Setup, workflows: list[Workflow]) -> None:
    """Store and start each workflow (two commits each)."""
    for wf in workflows:
        setup.store.store(wf)
        setup.orchestrator.start(wf)


def start_service(setup: Setup) -> None:
    """Start the processor's background loop and return once it runs."""
    setup.processor.start()
    deadline = time.monotonic() + SERVICE_START_TIMEOUT_S
    while not setup.processor.is_running:
        if time.monotonic() > deadline:
            raise RuntimeError("the processor's background loop did not start")
        time.sleep(0.001)


def wait_finished(setup: Setup, workflows: int, expected_runs: int, timeout: float) -> int:
    """Wait until ``workflows`` workflows are in a final status; return how many SUCCEEDED.

    The waiting thread sleeps on the task counter until the last task has run (checking
    the database every 50 ms meanwhile, in case a workflow failed early), then checks
    every millisecond for the commit that finishes the last workflow.
    """
    backend = setup.store.backend
    deadline = time.monotonic() + timeout
    while not RUNS.wait_for(expected_runs, SERVICE_CHECK_S):
        finished, succeeded = count_finished(backend)
        if finished >= workflows:
            return succeeded
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {finished} of {workflows} workflows finished in time")
    while True:
        finished, succeeded = count_finished(backend)
        if finished >= workflows or time.monotonic() > deadline:
            return succeeded
        time.sleep(SERVICE_FINAL_CHECK_S)


def run_once(workload: Workload, target: Target, mode: str = "drain") -> dict[str, Any]:
    """Run ``workload`` once on a fresh database; return its figures (RSS not included)."""
    with fresh_database(target) as db:
        setup = setup_for(db)
        if workload.register is not None:
            workload.register(setup.processor.task_registry)
        backend = setup.store.backend
        workflows = workload.build()
        if mode == "service":
            start_service(setup)
        rss_before = current_rss_kib()
        RUNS.value = 0
        setup.counter.reset()
        started = time.perf_counter()
        cpu_before = time.process_time()
        server_before = server_cpu(db.target)
        submit(setup, workflows)
        submitted = time.perf_counter()
        if mode == "service":
            wait_finished(setup, len(workflows), workload.expected_runs, PROCESS_ALL_TIMEOUT_S)
            # The last commit is the one that finished the last workflow.
            ended = setup.counter.last_commit
            processed: int | None = None
        else:
            processed = setup.processor.process_all(timeout=PROCESS_ALL_TIMEOUT_S)
            ended = time.perf_counter()
        cpu = time.process_time() - cpu_before
        server_after = server_cpu(db.target)
        wall = ended - started
        commits, reads, rollbacks = (
            setup.counter.commits,
            setup.counter.reads,
            setup.counter.rollbacks,
        )
        processor_commits = setup.processor.commits
        if mode == "service":
            setup.processor.stop()
        runs = RUNS.value
        statuses = [setup.store.retrieve(wf.id).status for wf in workflows]
        failed = [s.value for s in statuses if s is not WorkflowStatus.SUCCEEDED]
        if failed:
            raise RuntimeError(f"{workload.name}: {len(failed)} workflow(s) ended {failed[:3]}")
        if runs != workload.expected_runs:
            raise RuntimeError(
                f"{workload.name}: {runs} stage runs, expected {workload.expected_runs}"
            )
        stages = workload.stage_runs
        result = {
            "workload": workload.name,
            "mode": mode,
            "workflows": len(workflows),
            "stages_executed": stages,
            "messages_processed": processed,
            "wall_s": wall,
            "stages_per_s": stages / wall,
            "us_per_stage": 1e6 * wall / stages,
            "cpu_us_per_stage": 1e6 * cpu / stages,
            "commits": commits,
            "processor_commits": processor_commits,
            "reads": reads,
            "rollbacks": rollbacks,
            "commits_per_stage": commits / stages,
            "rss_before_kib": rss_before,
            # The local PostgreSQL server's CPU over the run (None: SQLite, or unknown).
            "server_cpu_us_per_stage": (
                1e6 * (server_after - server_before) / stages
                if server_before is not None and server_after is not None
                else None
            ),
            **database_info(backend),
        }
        result["submit_s"] = submitted - started
        if runs != stages:
            result["task_runs"] = runs
        backend.close()
    return result


# -- workers_200: the body of one worker process ---------------------------------------


def submit_workers_200(setup: Setup) -> list[str]:
    """Store and start the 200 workflows of ``workers_200``; return their ids."""
    workflows = workers_200()
    submit(setup, workflows)
    return [wf.id for wf in workflows]


def store_workers_200(setup: Setup) -> list[Workflow]:
    """Store the 200 workflows of ``workers_200`` without starting them (one commit each).

    A stored workflow that was not started has no message: no worker can claim anything
    of it until :func:`start_workers_200`.
    """
    workflows = workers_200()
    for wf in workflows:
        setup.store.store(wf)
    return workflows


WORKERS_SUBMITTERS = 8
"""Threads that start ``workers_200``'s stored workflows in service mode."""


def start_workers_200(setup: Setup, workflows: list[Workflow]) -> None:
    """Start stored workflows as fast as possible: one commit each, from several threads.

    :data:`WORKERS_SUBMITTERS` threads each start every n-th workflow, so that the commits
    of concurrent starts can share a flush and the work arrives faster than it is done.
    """

    def start(part: list[Workflow]) -> None:
        for wf in part:
            setup.orchestrator.start(wf)

    with ThreadPoolExecutor(WORKERS_SUBMITTERS, thread_name_prefix="bench-submit") as pool:
        parts = [workflows[i::WORKERS_SUBMITTERS] for i in range(WORKERS_SUBMITTERS)]
        for future in [pool.submit(start, part) for part in parts]:
            future.result()


def worker_body(db: Database, poll_ms: int, mode: str = "drain") -> dict[str, Any]:
    """Body of one worker process: open the database, say ready, wait for ``go``, work.

    Prints ``ready`` once the engine is open and reads one line from stdin (the start
    signal). Drain mode then runs ``process_all`` until the queue is empty and nothing
    runs. Service mode runs ``start()``, prints ``running`` once the background loop runs,
    and works in the background until the next line on stdin (``stop``), then ``stop()``.
    ``poll_ms`` is the processor's ``poll_frequency_ms``: how long an idle worker waits
    before it looks again (on PostgreSQL a NOTIFY of new work ends the wait early).
    """
    setup = setup_for(db, poll_ms)
    rss_before = current_rss_kib()
    RUNS.value = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    processed: int | None = None
    if mode == "service":
        start_service(setup)
        print("running", flush=True)
        sys.stdin.readline()
        setup.processor.stop()
    else:
        processed = setup.processor.process_all(timeout=PROCESS_ALL_TIMEOUT_S)
    finished = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "pid": os.getpid(),
        "stages_executed": RUNS.value,
        "messages_processed": processed,
        "processor_commits": setup.processor.commits,
        "commits": setup.counter.commits,
        "rollbacks": setup.counter.rollbacks,
        "reads": setup.counter.reads,
        "started": started,
        "finished": finished,
        "rss_before_kib": rss_before,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
    }
    setup.store.backend.close()
    return result
