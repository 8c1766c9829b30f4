"""Run the stabilize benchmark suite and compare it with the targets.

Usage (from the repository root)::

    uv run python benchmarks/run.py [--backend sqlite|postgres] [--pg-url URL]
                                    [--only NAME[,NAME...]] [--journal WAL|DELETE]
                                    [--workers 1,2,4] [--repeat N] [--json [PATH]]
    uv run python benchmarks/run.py --profile NAME [--profile-top N] [--backend ...]

Every repetition of every workload runs in a fresh child process
(``run.py --child NAME``) so that its peak RSS is its own; the child prints one JSON line.
``workers_200`` submits 200 small workflows, then starts N worker processes
(``run.py --worker``) at once and times them until the last workflow has SUCCEEDED.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import random
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from workloads import (
    BY_NAME,
    WORKERS_STAGES_PER_WORKFLOW,
    WORKERS_WORKFLOWS,
    WORKERS_WORKLOAD,
    WORKLOADS,
    Database,
    Target,
    count_succeeded,
    database_info,
    default_pg_url,
    fresh_database,
    machine_cpu,
    make_setup,
    run_once,
    submit_workers_200,
    worker_drain,
)

HERE = Path(__file__).resolve()

# The targets (SQLite WAL, process_all, 2 cores).
TARGET_STAGES_PER_S = 2000.0  # on linear_100 and fanout_200
TARGET_COMMITS_PER_STAGE = 2.0  # single-task stages
TARGET_PEAK_RSS_MB = 100.0
# "Flat" cost per stage from width 100 to 400: we accept up to 25 % more per stage at 400.
TARGET_WIDTH_RATIO = 1.25
THROUGHPUT_WORKLOADS = ("linear_100", "fanout_200")
WIDTH_SERIES = ("fanout_100", "fanout_200", "fanout_400")
# workers_200 (issue 4: PostgreSQL, 2 cores): stages/s with 1 and with 4 worker processes.
TARGET_WORKERS_1 = 1000.0
TARGET_WORKERS_4 = 2000.0
TARGET_EVENT_COST = 0.20  # issue 5: recording costs at most 20 % of throughput
WORKERS_POLL_S = 0.02
WORKER_START_TIMEOUT_S = 60.0


def peak_rss_kib() -> int:
    """This process's peak RSS (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss


def target_args(target: Target) -> list[str]:
    return [
        "--backend",
        target.backend,
        "--journal",
        target.journal,
        "--pg-url",
        target.pg_url,
        "--events",
        target.events,
    ]


def child(name: str, target: Target) -> int:
    """Run one workload once and print its figures as one JSON line."""
    result = run_once(BY_NAME[name], target)
    result["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(result), flush=True)
    return 0


def worker(target: Target, location: str, poll_ms: int) -> int:
    """One worker process of ``workers_200``: wait for ``go``, drain, print one JSON line."""
    result = worker_drain(Database(target, location), poll_ms)
    result["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(result), flush=True)
    return 0


def run_workers(n: int, target: Target, poll_ms: int) -> dict[str, Any]:
    """One repetition of ``workers_200`` with ``n`` worker processes on a fresh database.

    The 200 workflows are stored and started first (not timed). The workers open the
    database, say ``ready`` and wait; the clock starts when all are told ``go`` at once and
    stops at the commit of the last workflow to end SUCCEEDED (its ``updated_at``, which
    the parent finds by polling the database every 20 ms).
    """
    with fresh_database(target) as db:
        setup = make_setup(db)
        backend = setup.store.backend
        ids = submit_workers_200(setup)
        submit_commits = setup.counter.commits
        procs = [
            subprocess.Popen(
                [sys.executable, str(HERE), "--worker", *db.as_args(), "--poll-ms", str(poll_ms)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(n)
        ]
        try:
            for proc in procs:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                if line.strip() != "ready":
                    raise RuntimeError(
                        f"worker {proc.pid} did not start: {line!r}\n{proc.communicate()[1]}"
                    )
            cpu_go = machine_cpu()
            go = time.time()
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write("go\n")
                proc.stdin.flush()
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
            cpu_end = machine_cpu()
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
    return {
        "workload": WORKERS_WORKLOAD,
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
        **info,
    }


def spawn(name: str, target: Target) -> dict[str, Any]:
    """Run one repetition in a fresh interpreter and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", name, *target_args(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {name} failed ({proc.returncode}):\n{proc.stderr}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"child {name} printed no result:\n{proc.stdout}\n{proc.stderr}")
    parsed: dict[str, Any] = json.loads(lines[-1])
    return parsed


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median over the repetitions of one workload."""
    rates = [r["stages_per_s"] for r in runs]
    per_stage = [r["us_per_stage"] for r in runs]
    cps = [r["commits_per_stage"] for r in runs]
    first = runs[0]
    return {
        "workload": name,
        "description": BY_NAME[name].description,
        "workflows": first["workflows"],
        "stages_executed": first["stages_executed"],
        "repeats": len(runs),
        "best_stages_per_s": max(rates),
        "median_stages_per_s": statistics.median(rates),
        "median_wall_s": statistics.median(r["wall_s"] for r in runs),
        "median_us_per_stage": statistics.median(per_stage),
        "best_us_per_stage": min(per_stage),
        "median_cpu_us_per_stage": statistics.median(r["cpu_us_per_stage"] for r in runs),
        "commits_per_stage": statistics.median(cps),
        "max_commits_per_stage": max(cps),
        "median_commits": statistics.median(r["commits"] for r in runs),
        "median_processor_commits": statistics.median(r["processor_commits"] for r in runs),
        "median_reads": statistics.median(r["reads"] for r in runs),
        "peak_rss_mb": max(r["peak_rss_kib"] for r in runs) / 1024,
        "baseline_rss_mb": statistics.median(r["rss_before_kib"] for r in runs) / 1024,
        "runs": runs,
    }


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def describe_env(env: dict[str, Any]) -> str:
    if env["backend"] == "sqlite":
        return (
            f"{env['database']}, journal_mode={env['journal_mode']}, "
            f"synchronous={env['synchronous']}, event recording {env['events']}"
        )
    return f"{env['database']}, {env['synchronous']}, event recording {env['events']}"


def print_report(results: list[dict[str, Any]], env: dict[str, Any]) -> None:
    if not results:
        return
    print(
        f"\nstabilize benchmarks — {describe_env(env)}, Python {env['python']}, "
        f"{env['cpus']} CPU(s), {env['repeats']} repetitions each (fresh process per run)\n"
    )
    header = (
        f"{'workload':<18} {'stages':>6} {'best st/s':>10} {'med st/s':>9} {'med µs/st':>10} "
        f"{'CPU µs/st':>9} {'commits/st':>10} {'peak RSS MB':>11}  targets"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        notes = []
        if r["workload"] in THROUGHPUT_WORKLOADS:
            ok = r["median_stages_per_s"] >= TARGET_STAGES_PER_S
            notes.append(f"st/s>={TARGET_STAGES_PER_S:,.0f} {verdict(ok)}")
        ok = r["max_commits_per_stage"] <= TARGET_COMMITS_PER_STAGE
        notes.append(f"commits<={TARGET_COMMITS_PER_STAGE:g} {verdict(ok)}")
        ok = r["peak_rss_mb"] < TARGET_PEAK_RSS_MB
        notes.append(f"RSS<{TARGET_PEAK_RSS_MB:g} {verdict(ok)}")
        print(
            f"{r['workload']:<18} {r['stages_executed']:>6} {r['best_stages_per_s']:>10,.0f} "
            f"{r['median_stages_per_s']:>9,.0f} {r['median_us_per_stage']:>10,.0f} "
            f"{r['median_cpu_us_per_stage']:>9,.0f} {r['commits_per_stage']:>10.2f} "
            f"{r['peak_rss_mb']:>11.1f}  {', '.join(notes)}"
        )
    by_name = {r["workload"]: r for r in results}
    series = [by_name[n] for n in WIDTH_SERIES if n in by_name]
    if len(series) >= 2:
        print("\ncost per stage vs fan-out width (median µs per stage):")
        base = series[0]["median_us_per_stage"]
        for r in series:
            ratio = r["median_us_per_stage"] / base
            print(
                f"  width {BY_NAME[r['workload']].width:>4}: {r['median_us_per_stage']:>7,.0f} µs"
                f"  (x{ratio:.2f} vs width {BY_NAME[series[0]['workload']].width})"
            )
        ratio = series[-1]["median_us_per_stage"] / base
        print(
            f"  target: flat (<= x{TARGET_WIDTH_RATIO:g} from the narrowest to the widest): "
            f"{verdict(ratio <= TARGET_WIDTH_RATIO)}"
        )
    print(
        "\ntargets (SQLite WAL, process_all, 2 cores): >= 2,000 stages/s on linear_100 and "
        "fanout_200 (judged on the median), <= 2 commits per single-task stage, cost per stage "
        "flat from width 100 to 400, peak RSS < 100 MB."
    )
    if env["backend"] == "postgres":
        print(
            "note: these targets are the SQLite WAL ones, shown for reference; the PostgreSQL "
            "targets are those of workers_200."
        )
    elif env["journal_mode"] != "WAL":
        print(
            f"note: the targets are defined for WAL; this run used {env['journal_mode']} "
            f"(synchronous={env['synchronous']}), so the verdicts are for reference only."
        )
    print(
        "commits = every write transaction on the database during store + start + process_all "
        "(store, orchestrator and processor), divided by stage runs."
    )


def summarise_workers(n: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median over the repetitions of ``workers_200`` with ``n`` workers."""
    rates = [r["stages_per_s"] for r in runs]
    cps = [r["commits_per_stage"] for r in runs]
    return {
        "workload": WORKERS_WORKLOAD,
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


def print_workers_report(results: list[dict[str, Any]], env: dict[str, Any]) -> None:
    if not results:
        return
    print(
        f"\n{WORKERS_WORKLOAD} — {WORKERS_WORKFLOWS} workflows x {WORKERS_STAGES_PER_WORKFLOW} "
        f"stages (chains and fan-outs), N worker processes, {describe_env(env)}, "
        f"{env['cpus']} CPU(s), {env['repeats']} repetitions each\n"
    )
    header = (
        f"{'workers':>7} {'stages':>6} {'best st/s':>10} {'med st/s':>9} {'med wall s':>10} "
        f"{'commits/st':>10} {'worker CPU µs/st':>16} {'CPU busy':>8} "
        f"{'peak RSS MB/worker':>18}  targets"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        notes = []
        goal = {1: TARGET_WORKERS_1, 4: TARGET_WORKERS_4}.get(r["workers"])
        if goal is not None:
            notes.append(f"st/s>={goal:,.0f} {verdict(r['median_stages_per_s'] >= goal)}")
        ok = r["max_commits_per_stage"] <= TARGET_COMMITS_PER_STAGE
        notes.append(f"commits<={TARGET_COMMITS_PER_STAGE:g} {verdict(ok)}")
        print(
            f"{r['workers']:>7} {r['stages_executed']:>6} {r['best_stages_per_s']:>10,.0f} "
            f"{r['median_stages_per_s']:>9,.0f} {r['median_wall_s']:>10.3f} "
            f"{r['commits_per_stage']:>10.2f} {r['median_worker_cpu_us_per_stage']:>16,.0f} "
            f"{100 * r['median_machine_busy']:>7.0f}% {r['peak_rss_mb']:>18.1f}  "
            f"{', '.join(notes)}"
        )
    print(
        "\ntargets (PostgreSQL, 2 cores): >= 1,000 stages/s with 1 worker, >= 2,000 with 4, "
        "<= 2 commits per single-task stage. Wall = workers told to go -> commit of the "
        "last workflow; commits = submissions (store + start) + every worker transaction; "
        "worker CPU = user + system time of the worker processes per stage; CPU busy = share "
        "of all CPUs busy during the run (workers, database server and all)."
    )


def profile_drain(target: Target) -> tuple[cProfile.Profile, str]:
    """Submit ``workers_200``, then profile one in-process ``process_all`` draining it."""
    with fresh_database(target) as db:
        setup = make_setup(db)
        submit_workers_200(setup)
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        setup.processor.process_all(timeout=600)
        profiler.disable()
        wall = time.perf_counter() - started
        setup.store.backend.close()
    runs = WORKERS_WORKFLOWS * WORKERS_STAGES_PER_WORKFLOW
    return profiler, (
        f"profiled {WORKERS_WORKLOAD} (1 in-process worker, submissions not profiled): "
        f"{runs} stages in {wall:.3f} s ({runs / wall:,.0f} stages/s under the profiler; "
        "main thread only)"
    )


def profile(name: str, target: Target, top: int) -> int:
    """Run one workload once in this process under cProfile and print the hotspots."""
    if name == WORKERS_WORKLOAD:
        profile_drain(target)  # warm-up: imports, SQL parsing caches
        profiler, summary = profile_drain(target)
    else:
        run_once(BY_NAME[name], target)  # warm-up: imports, SQL parsing caches
        profiler = cProfile.Profile()
        profiler.enable()
        result = run_once(BY_NAME[name], target)
        profiler.disable()
        summary = (
            f"profiled {name}: {result['stages_executed']} stages in {result['wall_s']:.3f} s "
            f"({result['stages_per_s']:,.0f} stages/s under the profiler; main thread only)"
        )
    print(summary)
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        print(out.getvalue())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=default_pg_url(),
        help="PostgreSQL server (default: $STABILIZE_BENCH_PG_URL or the local test server); "
        "every run uses a fresh schema that is dropped after it",
    )
    parser.add_argument("--only", help="comma-separated workload names", default=None)
    parser.add_argument("--journal", choices=["WAL", "DELETE"], default="WAL")
    parser.add_argument(
        "--events",
        choices=["on", "off", "compare"],
        default="on",
        help="record every transition in the event log (the default) or not; compare: "
        "run each workload both ways, repetitions interleaved, and report the cost",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workers",
        default="1,2,4",
        help=f"worker-process counts of {WORKERS_WORKLOAD} (comma-separated)",
    )
    parser.add_argument(
        "--poll-ms",
        type=int,
        default=50,
        help=f"poll_frequency_ms of the {WORKERS_WORKLOAD} workers (default 50, the engine's)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also dump all results as JSON (to PATH, or stdout without one)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="NAME", help="cProfile one workload in-process")
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)
    target = Target(args.backend, args.journal, args.pg_url, args.events)

    if args.events == "compare" and not (args.worker or args.child or args.profile):
        return compare_events(args, target)
    if args.worker:
        return worker(target, args.db, args.poll_ms)
    if args.child:
        return child(args.child, target)
    if args.profile:
        return profile(args.profile, target, args.profile_top)

    # The wide workloads (EXTRA_WORKLOADS) run only when named with --only.
    known = [*BY_NAME, WORKERS_WORKLOAD]
    names = [w.name for w in WORKLOADS] + [WORKERS_WORKLOAD]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; known: {sorted(known)}")
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]

    results = []
    for name in names:
        if name == WORKERS_WORKLOAD:
            continue
        started = time.monotonic()
        runs = [spawn(name, target) for _ in range(args.repeat)]
        results.append(summarise(name, runs))
        print(f"  ran {name} x{args.repeat} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    worker_results = []
    if WORKERS_WORKLOAD in names:
        for n in worker_counts:
            started = time.monotonic()
            runs = [run_workers(n, target, args.poll_ms) for _ in range(args.repeat)]
            worker_results.append(summarise_workers(n, runs))
            print(
                f"  ran {WORKERS_WORKLOAD} with {n} worker(s) x{args.repeat} in "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
    first = (results or worker_results)[0]["runs"][0]
    env = {
        "backend": first["backend"],
        "database": first["database"],
        "journal_mode": first["journal_mode"],
        "synchronous": first["synchronous"],
        "events": args.events,
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "repeats": args.repeat,
        "platform": platform.platform(),
    }
    print_report(results, env)
    print_workers_report(worker_results, env)
    if args.json is not None:
        payload = json.dumps(
            {"environment": env, "results": results, "workers": worker_results}, indent=2
        )
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


def cost_interval(
    on: list[float], off: list[float], rounds: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """A 95 % bootstrap interval of 1 - median(on) / median(off) (stages/s of repetitions)."""
    rng = random.Random(seed)
    median = statistics.median
    costs = sorted(
        1 - median(rng.choices(on, k=len(on))) / median(rng.choices(off, k=len(off)))
        for _ in range(rounds)
    )
    return costs[int(0.025 * rounds)], costs[int(0.975 * rounds) - 1]


def compare_events(args: argparse.Namespace, target: Target) -> int:
    """Each workload with recording on and off, alternating, and what recording costs.

    Alternating the repetitions (on, off, on, off, ...) spreads the drift of a shared
    machine evenly over both; the cost is 1 - (median stages/s on / median stages/s off).
    Its 95 % interval comes from resampling the repetitions (a bootstrap): on a noisy
    machine it shows how far the figure may be from the cost itself.
    """
    on, off = replace(target, events="on"), replace(target, events="off")
    names = [w.name for w in WORKLOADS]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip() in BY_NAME]
    rows: list[dict[str, Any]] = []
    for name in names:
        runs: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.repeat):
            runs["on"].append(spawn(name, on)["stages_per_s"])
            runs["off"].append(spawn(name, off)["stages_per_s"])
        with_events, without = statistics.median(runs["on"]), statistics.median(runs["off"])
        low, high = cost_interval(runs["on"], runs["off"])
        rows.append(
            {
                "workload": name,
                "on_stages_per_s": with_events,
                "off_stages_per_s": without,
                "cost": 1 - with_events / without,
                "cost_95": [low, high],
                "runs": runs,
            }
        )
        print(f"  compared {name} x{args.repeat}", file=sys.stderr)
    print(f"\nevent recording on vs off, {args.repeat} alternating repetitions each (medians)\n")
    header = (
        f"{'workload':<18} {'off st/s':>9} {'on st/s':>9} {'cost':>6} {'95 % interval':>14}  target"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        ok = verdict(r["cost"] <= TARGET_EVENT_COST)
        low, high = r["cost_95"]
        print(
            f"{r['workload']:<18} {r['off_stages_per_s']:>9,.0f} {r['on_stages_per_s']:>9,.0f} "
            f"{r['cost']:>6.1%} {f'{low:.0%} .. {high:.0%}':>14}  <={TARGET_EVENT_COST:.0%} {ok}"
        )
    if args.json is not None:
        payload = json.dumps({"events_compare": rows}, indent=2)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
