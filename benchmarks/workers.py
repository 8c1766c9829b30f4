"""``workers_200``: 200 small workflows worked off by N worker processes.

The parent creates a fresh database and starts N worker processes (``run.py --worker``),
each of which opens it with its own store, queue and processor, prints ``ready`` and waits.

- **drain**: the 200 workflows are stored and started first (not timed); the clock starts
  when all workers are told ``go`` at once, each runs ``process_all()``.
- **service**: the 200 workflows are stored first (``store.store``, not timed: a stored
  workflow that was not started has no message, so nothing can be claimed yet; ``store_s``
  in the JSON). The workers are then told ``go``: each runs ``start()`` and prints
  ``running`` once its background loop runs (idle, waiting for work). When every worker
  runs, the clock starts, just before the first ``orchestrator.start()`` (the earliest
  moment a message can become claimable; the first start's own commit is inside the
  clock), and the parent starts the 200 workflows as fast as it can (from
  ``measure.WORKERS_SUBMITTERS`` = 8 threads, one commit per start) while the workers
  already work on them. ``submit_s`` is how long the 200 starts took: the part of the
  wall during which work was still arriving; ``submit_share`` is that part of the wall,
  and ``after_submit_s`` the wall after the last start. Drain mode has no such overlap:
  its starts end before the clock starts. Commits per stage count the 200 stores and
  200 starts, as in drain mode.

Either way the clock stops at the commit of the last workflow to end SUCCEEDED (its
``updated_at``, which the parent finds by polling the database every 20 ms).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import (
    Target,
    count_succeeded,
    database_info,
    fresh_database,
    machine_cpu,
    server_cpu,
)
from measure import setup_for, start_workers_200, store_workers_200, submit_workers_200
from workloads import WORKERS_STAGES_PER_WORKFLOW, WORKERS_WORKFLOWS, WORKERS_WORKLOAD

from stabilize.models import Workflow

RUN_PY = Path(__file__).resolve().with_name("run.py")
WORKERS_POLL_S = 0.02


def _tell(procs: list[subprocess.Popen[str]], line: str) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()


def _read_line(proc: subprocess.Popen[str], expected: str) -> None:
    """Read the worker's next line; fail with its stderr unless it is ``expected``."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line.strip() != expected:
        proc.kill()
        raise RuntimeError(
            f"worker {proc.pid} did not say {expected!r}: {line!r}\n{proc.communicate()[1]}"
        )


def service_timing(clock_start: float, starts_done: float, last_ms: int) -> dict[str, float]:
    """Service mode's wall and how much of it overlapped the submissions.

    Args:
        clock_start: Epoch seconds just before the first ``orchestrator.start()``.
        starts_done: Epoch seconds when the last ``orchestrator.start()`` returned.
        last_ms: ``updated_at`` (epoch ms) of the last workflow to end SUCCEEDED.

    Returns:
        ``wall_s``, ``submit_s`` (the starts), ``submit_share`` (``submit_s / wall_s``)
        and ``after_submit_s`` (the wall after the last start, never below 0).
    """
    wall = last_ms / 1000 - clock_start
    submit = starts_done - clock_start
    return {
        "wall_s": wall,
        "submit_s": submit,
        "submit_share": submit / wall if wall > 0 else 0.0,
        "after_submit_s": max(0.0, wall - submit),
    }


def run_workers(n: int, target: Target, poll_ms: int, mode: str = "drain") -> dict[str, Any]:
    """One repetition of ``workers_200`` with ``n`` worker processes on a fresh database."""
    with fresh_database(target) as db:
        setup = setup_for(db)
        backend = setup.store.backend
        ids: list[str] = []
        workflows: list[Workflow] = []
        if mode == "drain":
            ids = submit_workers_200(setup)
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(RUN_PY),
                    "--worker",
                    *db.as_args(),
                    "--poll-ms",
                    str(poll_ms),
                    "--mode",
                    mode,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        store_s = starts_done = 0.0
        try:
            for proc in procs:
                _read_line(proc, "ready")
            if mode == "service":
                # Stored, not started: no message yet, so no worker can claim anything.
                stored = time.time()
                workflows = store_workers_200(setup)
                ids = [wf.id for wf in workflows]
                store_s = time.time() - stored
                _tell(procs, "go")
                for proc in procs:
                    _read_line(proc, "running")
                cpu_go, server_go = machine_cpu(), server_cpu(target)
                go = time.time()  # just before the first message can become claimable
                start_workers_200(setup, workflows)
                starts_done = time.time()
            else:
                cpu_go, server_go = machine_cpu(), server_cpu(target)
                go = time.time()
                _tell(procs, "go")
            submit_commits = setup.counter.commits
            deadline = time.monotonic() + 600
            while True:
                done, last_ms = count_succeeded(backend)
                if done >= len(ids):
                    break
                exited = all(p.poll() is not None for p in procs)
                if exited or time.monotonic() > deadline:
                    done, last_ms = count_succeeded(backend)  # the last commit may be new
                    if done >= len(ids):
                        break
                    errors = "".join(p.communicate()[1] for p in procs if exited)
                    raise RuntimeError(
                        f"workers_200: only {done} of {len(ids)} SUCCEEDED\n{errors}"
                    )
                time.sleep(WORKERS_POLL_S)
            detected = time.time()
            cpu_end, server_end = machine_cpu(), server_cpu(target)
            if mode == "service":
                _tell(procs, "stop")
            outputs = []
            for proc in procs:
                out, err = proc.communicate(timeout=120)
                if proc.returncode != 0:
                    raise RuntimeError(f"worker {proc.pid} failed ({proc.returncode}):\n{err}")
                lines = [ln for ln in out.splitlines() if ln.startswith("{")]
                outputs.append(json.loads(lines[-1]))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        info = database_info(backend)
        backend.close()
    runs = sum(w["stages_executed"] for w in outputs)
    expected = WORKERS_WORKFLOWS * WORKERS_STAGES_PER_WORKFLOW
    if runs != expected:
        raise RuntimeError(f"workers_200: {runs} stage runs, expected {expected}")
    assert last_ms is not None
    wall = last_ms / 1000 - go
    worker_commits = sum(w["commits"] for w in outputs)
    result = {
        "workload": WORKERS_WORKLOAD,
        "mode": mode,
        "workers": n,
        "poll_ms": poll_ms,
        "workflows": len(ids),
        "stages_executed": runs,
        "wall_s": wall,
        "polled_wall_s": detected - go,
        "stages_per_s": runs / wall,
        "us_per_stage": 1e6 * wall / runs,
        "submit_commits": submit_commits,
        "worker_commits": worker_commits,
        "processor_commits": sum(w["processor_commits"] for w in outputs),
        "commits": submit_commits + worker_commits,
        "commits_per_stage": (submit_commits + worker_commits) / runs,
        "stages_per_worker": [w["stages_executed"] for w in outputs],
        "peak_rss_kib": max(w["peak_rss_kib"] for w in outputs),
        "worker_peak_rss_kib": [w["peak_rss_kib"] for w in outputs],
        "rollbacks": sum(w["rollbacks"] for w in outputs),
        "worker_cpu_s": sum(w["cpu_s"] for w in outputs),
        # Busy share of all CPUs from go to detection (workers, database server, the parent).
        "machine_busy": (cpu_end[0] - cpu_go[0]) / max(1e-9, cpu_end[1] - cpu_go[1]),
        # The local PostgreSQL server's CPU from go to detection (None: SQLite, or unknown).
        "server_cpu_s": (
            server_end - server_go if server_go is not None and server_end is not None else None
        ),
        **info,
    }
    if mode == "service":
        result.update(service_timing(go, starts_done, last_ms))  # the same wall_s
        result["store_s"] = store_s
    return result


def summarise_workers(n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median over the repetitions of ``workers_200`` with ``n`` workers."""
    rates = [r["stages_per_s"] for r in runs]
    cps = [r["commits_per_stage"] for r in runs]
    summary: dict[str, Any] = {
        "workload": WORKERS_WORKLOAD,
        "mode": runs[0].get("mode", "drain"),
        "workers": n,
        "stages_executed": runs[0]["stages_executed"],
        "repeats": len(runs),
        "best_stages_per_s": max(rates),
        "median_stages_per_s": statistics.median(rates),
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "commits_per_stage": statistics.median(cps),
        "max_commits_per_stage": max(cps),
        "median_commits": statistics.median(r["commits"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_kib"] for r in runs) / 1024,
        "median_worker_cpu_us_per_stage": statistics.median(
            1e6 * r["worker_cpu_s"] / r["stages_executed"] for r in runs
        ),
        "median_machine_busy": statistics.median(r["machine_busy"] for r in runs),
        "runs": runs,
    }
    if all(r.get("server_cpu_s") is not None for r in runs):
        summary["median_server_cpu_us_per_stage"] = statistics.median(
            1e6 * r["server_cpu_s"] / r["stages_executed"] for r in runs
        )
    if all("submit_share" in r for r in runs):  # service mode: the starts within the wall
        summary["median_submit_s"] = statistics.median(r["submit_s"] for r in runs)
        summary["median_submit_share"] = statistics.median(r["submit_share"] for r in runs)
    return summary
