"""``run.py --profile NAME``: one run in this process under cProfile, and its hotspots.

Drain mode profiles the main thread (the submissions, then its wait in ``process_all``)
and the thread that runs ``process_all``'s loop (``stabilize-process-all``), merged.
Service mode profiles the processor's own thread (``QueueProcessor.start()`` runs its loop
in a thread named ``stabilize-processor``). ``threading.Thread.run`` is wrapped for the
run so that such a thread gets a profiler of its own. Both use cProfile's default
wall-clock timer, so time spent waiting (polls, the runner's result queue, LISTEN, and
the main thread's wait for ``process_all``'s loop) shows up.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from harness import PROCESS_ALL_TIMEOUT_S, RUNS, Target, fresh_database
from measure import (
    run_once,
    setup_for,
    start_service,
    start_workers_200,
    store_workers_200,
    submit_workers_200,
    wait_finished,
)
from workloads import BY_NAME, WORKERS_STAGES_PER_WORKFLOW, WORKERS_WORKFLOWS, WORKERS_WORKLOAD

PROCESSOR_THREAD = "stabilize-processor"
DRAIN_THREAD = "stabilize-process-all"


@contextmanager
def profiled_thread(name: str) -> Iterator[list[cProfile.Profile]]:
    """Profile every thread named ``name`` that starts inside the block (one profile each)."""
    profiles: list[cProfile.Profile] = []
    original: Callable[[threading.Thread], None] = threading.Thread.run

    def run(thread: threading.Thread) -> None:
        if thread.name != name:
            original(thread)
            return
        profiler = cProfile.Profile()
        profiles.append(profiler)
        profiler.enable()
        try:
            original(thread)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign, assignment]
    try:
        yield profiles
    finally:
        threading.Thread.run = original  # type: ignore[method-assign, assignment]


def profile_drain(target: Target) -> tuple[cProfile.Profile, str]:
    """Submit ``workers_200``, then profile one in-process ``process_all`` draining it."""
    with fresh_database(target) as db:
        setup = setup_for(db)
        submit_workers_200(setup)
        with profiled_thread(DRAIN_THREAD) as profiles:
            started = time.perf_counter()
            setup.processor.process_all(timeout=600)
            wall = time.perf_counter() - started
        setup.store.backend.close()
    runs = WORKERS_WORKFLOWS * WORKERS_STAGES_PER_WORKFLOW
    return _one(profiles, DRAIN_THREAD), (
        f"profiled {WORKERS_WORKLOAD} (1 in-process worker, submissions not profiled): "
        f"{runs} stages in {wall:.3f} s ({runs / wall:,.0f} stages/s under the profiler; "
        "the process_all loop's thread only)"
    )


def profile_service_workers(target: Target, poll_ms: int) -> tuple[cProfile.Profile, str]:
    """One in-process service worker (``start()``) working off the 200 workflows."""
    runs = WORKERS_WORKFLOWS * WORKERS_STAGES_PER_WORKFLOW
    with fresh_database(target) as db, profiled_thread(PROCESSOR_THREAD) as profiles:
        setup = setup_for(db, poll_ms)
        # As workers_200 in service mode: stored first (nothing claimable yet), then
        # started while the worker runs, the clock from just before the first start.
        workflows = store_workers_200(setup)
        start_service(setup)
        RUNS.value = 0
        started = time.perf_counter()
        start_workers_200(setup, workflows)
        wait_finished(setup, WORKERS_WORKFLOWS, runs, PROCESS_ALL_TIMEOUT_S)
        wall = setup.counter.last_commit - started
        setup.processor.stop()
        setup.store.backend.close()
    return _one(profiles, PROCESSOR_THREAD), (
        f"profiled {WORKERS_WORKLOAD} in service mode (1 in-process worker, start(), "
        f"poll_frequency_ms={poll_ms}, started while it runs): {runs} stages in "
        f"{wall:.3f} s ({runs / wall:,.0f} stages/s under the profiler; the processor's "
        "thread only, from start() to stop())"
    )


def _one(profiles: list[cProfile.Profile], name: str) -> cProfile.Profile:
    if len(profiles) != 1:
        raise RuntimeError(f"expected one thread named {name!r} to profile, found {len(profiles)}")
    return profiles[0]


def profile(name: str, target: Target, top: int, mode: str = "drain", poll_ms: int = 50) -> int:
    """Run one workload once in this process under cProfile and print the hotspots."""
    profiler: cProfile.Profile
    more: list[cProfile.Profile] = []
    if name == WORKERS_WORKLOAD and mode == "service":
        profile_service_workers(target, poll_ms)  # warm-up: imports, SQL parsing caches
        profiler, summary = profile_service_workers(target, poll_ms)
    elif name == WORKERS_WORKLOAD:
        profile_drain(target)  # warm-up: imports, SQL parsing caches
        profiler, summary = profile_drain(target)
    elif mode == "service":
        run_once(BY_NAME[name], target, mode)  # warm-up
        with profiled_thread(PROCESSOR_THREAD) as profiles:
            result = run_once(BY_NAME[name], target, mode)
        profiler = _one(profiles, PROCESSOR_THREAD)
        summary = _summary(name, result, "the processor's thread only, from start() to stop()")
    else:
        run_once(BY_NAME[name], target)  # warm-up: imports, SQL parsing caches
        main = cProfile.Profile()
        with profiled_thread(DRAIN_THREAD) as profiles:
            main.enable()
            result = run_once(BY_NAME[name], target)
            main.disable()
        profiler, more = main, [_one(profiles, DRAIN_THREAD)]
        summary = _summary(
            name,
            result,
            "the main thread (submissions, then its wait in process_all) and the "
            "process_all loop's thread, merged",
        )
    print(summary)
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, *more, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        print(out.getvalue())
    return 0


def _summary(name: str, result: dict[str, Any], scope: str) -> str:
    how = " in service mode" if result.get("mode") == "service" else ""
    return (
        f"profiled {name}{how}: {result['stages_executed']} stages in {result['wall_s']:.3f} s "
        f"({result['stages_per_s']:,.0f} stages/s under the profiler; {scope})"
    )
