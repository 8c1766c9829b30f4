r"""How fast the monitor opens on a large database, and what it costs while idle.

    uv run python apps/monitor/benchmarks/scale.py --db-url sqlite:////tmp/monitor-scale.db
    uv run python apps/monitor/benchmarks/scale.py --db-url postgresql://root@127.0.0.1/test \\
        --schema monitor_scale

Fills the database (once) with ``--workflows`` workflows of ``--stages`` stages each, in
the mix of statuses a busy system has, then reports:

- each query the monitor makes on a reread, timed (best of 5);
- ``open``: from opening the database to the first frame of the app (headless, 120x40);
- ``idle CPU``: ``stabilize monitor`` in a pseudo-terminal with nothing changing, CPU
  seconds of its process over ``--idle`` seconds of wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from typing import Any

from stabilize import StageExecution, TaskExecution, Workflow, WorkflowStatus
from stabilize.connect import open_database
from stabilize.persistence import overview
from stabilize_monitor import DatabaseSource, Filters

S = WorkflowStatus
MIX = [S.SUCCEEDED] * 16 + [S.RUNNING] * 2 + [S.TERMINAL, S.CANCELED]


def fill(url: str, schema: str | None, workflows: int, stages: int) -> None:
    """Store the workflows the database lacks, in batches of 500 per transaction."""
    store, _ = open_database(url, schema)
    have = store.count()
    if have >= workflows:
        print(f"database holds {have} workflows already")
        return
    backend = store.backend
    now = int(time.time() * 1000)
    batch = 500
    started = time.perf_counter()
    for first in range(have, workflows, batch):
        with backend.transaction() as tx:
            for i in range(first, min(first + batch, workflows)):
                tx.insert_workflow(_workflow(i, stages), now - (workflows - i) * 1000)
    print(f"stored {workflows - have} workflows in {time.perf_counter() - started:.1f} s")


def _workflow(i: int, stages: int) -> Workflow:
    status = MIX[i % len(MIX)]
    chain = []
    for n in range(stages):
        done = status is S.SUCCEEDED or n < stages // 2
        chain.append(
            StageExecution(
                ref_id=f"s{n}",
                type="work",
                name=f"Step {n}",
                requisite_stage_ref_ids={f"s{n - 1}"} if n else set(),
                status=S.SUCCEEDED if done else (S.RUNNING if n == stages // 2 else S.NOT_STARTED),
                tasks=[TaskExecution.create(f"t{n}", "work", stage_start=True, stage_end=True)],
            )
        )
    wf = Workflow.create(application=f"app{i % 7}", name=f"Job {i} of kind {i % 13}", stages=chain)
    wf.status = status
    wf.start_time = 1_800_000_000_000 + i
    return wf


def best(fn: Callable[[], Any], runs: int = 5) -> float:
    """The shortest of ``runs`` timings of ``fn()``, in seconds."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def queries(source: DatabaseSource) -> None:
    """Print the time of each query a reread makes."""
    now = time.time()
    cases: dict[str, Callable[[], Any]] = {
        "page of 200 workflows (all)": lambda: source.workflows(Filters(), 200, now),
        "page of 200 (status running)": lambda: source.workflows(
            Filters(status="running"), 200, now
        ),
        "page of 200 (app, failed)": lambda: source.workflows(
            Filters(application="app3", status="failed"), 200, now
        ),
        "page of 200 (search)": lambda: source.workflows(Filters(search="kind 7"), 200, now),
        "counts by status": lambda: source.counts(None),
        "applications": source.applications,
        "queue stats": lambda: source.queue_stats(now),
        "change marker": source.marker,
        "finished stages (chart)": source.finished_stages,
        "one workflow": lambda: source.workflow(
            overview.summarize_workflows(source.store, limit=1)[0].id
        ),
    }
    for name, fn in cases.items():
        print(f"  {name:<32}{best(fn) * 1000:8.1f} ms")


def time_to_first_frame(url: str, schema: str | None) -> float:
    """Seconds from opening the database to the app's first frame (headless)."""
    from stabilize_monitor.app import MonitorApp

    async def run() -> float:
        started = time.perf_counter()
        app = MonitorApp(DatabaseSource.open(url, schema), watch=False)
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            return time.perf_counter() - started

    return asyncio.run(run())


def idle_cpu(url: str, schema: str | None, seconds: float) -> tuple[float, float]:
    """CPU seconds ``stabilize monitor`` uses in a pty while nothing changes, and the wall time."""
    args = [sys.executable, "-m", "stabilize", "monitor", "--db-url", url]
    if schema is not None:
        args += ["--schema", schema]
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {**os.environ, "TERM": "xterm-256color"}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
    os.close(slave)
    try:
        _drain(master, 5.0)  # start-up and first frames
        before = _cpu(proc.pid)
        started = time.monotonic()
        _drain(master, seconds)
        used = _cpu(proc.pid) - before
        wall = time.monotonic() - started
        os.write(master, b"q")
        proc.wait(timeout=30)
        return used, wall
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def _drain(fd: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            os.read(fd, 65536)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    """Fill, then measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--schema", default=None)
    parser.add_argument("--workflows", type=int, default=10_000)
    parser.add_argument("--stages", type=int, default=10)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle measured")
    ns = parser.parse_args()
    fill(ns.db_url, ns.schema, ns.workflows, ns.stages)
    source = DatabaseSource.open(ns.db_url, ns.schema)
    print(f"{source.store.count()} workflows, {source.finished_stages()} finished stages")
    print("queries (best of 5):")
    queries(source)
    opens = [time_to_first_frame(ns.db_url, ns.schema) for _ in range(3)]
    best_ms, worst_ms = min(opens) * 1000, max(opens) * 1000
    print(f"open to first frame: {best_ms:.0f} ms (best of 3; worst {worst_ms:.0f})")
    used, wall = idle_cpu(ns.db_url, ns.schema, ns.idle)
    print(f"idle: {used:.2f} CPU s in {wall:.0f} s = {100 * used / wall:.2f} % of one core")


if __name__ == "__main__":
    main()
