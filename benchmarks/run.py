"""Run the stabilize benchmark suite and compare it with the targets.

Usage (from the repository root)::

    uv run python benchmarks/run.py [--backend sqlite|postgres] [--pg-url URL]
                                    [--only NAME[,NAME...]] [--journal WAL|DELETE]
                                    [--mode drain|service|both] [--series] [--latency]
                                    [--workers 1,2,4] [--repeat N] [--json [PATH]]
    uv run python benchmarks/run.py --profile NAME [--profile-top N] [--mode ...] [--backend ...]
    uv run python benchmarks/run.py --compare OLD_JSON NEW_JSON

Every repetition of every workload runs in a fresh child process
(``run.py --child NAME``) so that its peak RSS is its own; the child prints one JSON line.
``workers_200`` submits 200 small workflows, then starts N worker processes
(``run.py --worker``) at once and times them until the last workflow has SUCCEEDED.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness import Database, Target, WorkloadSkipped, default_pg_url, peak_rss_kib
from latency import (
    LATENCY_IDLE_MS,
    LATENCY_WORKFLOWS,
    LATENCY_WORKLOAD,
    print_latency,
    run_latency,
    summarise_latency,
)
from measure import MODES, run_once, worker_body
from profiling import profile
from report import (
    TARGET_EVENT_COST,
    print_modes,
    print_report,
    print_series,
    print_skipped,
    print_workers_report,
    series_rows,
    summarise,
    verdict,
)
from workers import run_workers, summarise_workers
from workloads import BY_NAME, SERIES, WORKERS_WORKLOAD, WORKLOADS

import stabilize

HERE = Path(__file__).resolve()


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


def child(name: str, target: Target, args: argparse.Namespace) -> int:
    """Run one workload once and print its figures as one JSON line."""
    result: dict[str, Any]
    if name == LATENCY_WORKLOAD:
        result = run_latency(target, args.poll_ms, args.latency_workflows, args.latency_idle_ms)
    else:
        try:
            result = run_once(BY_NAME[name], target, args.mode)
        except WorkloadSkipped as exc:
            print(json.dumps({"workload": name, "mode": args.mode, "skipped": str(exc)}))
            return 0
    result["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(result), flush=True)
    return 0


def worker(target: Target, location: str, poll_ms: int, mode: str) -> int:
    """One worker process of ``workers_200``: wait for ``go``, work, print one JSON line."""
    result = worker_body(Database(target, location), poll_ms, mode)
    result["peak_rss_kib"] = peak_rss_kib()
    print(json.dumps(result), flush=True)
    return 0


def spawn(name: str, target: Target, extra: list[str] | None = None) -> dict[str, Any]:
    """Run one repetition in a fresh interpreter and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", name, *target_args(target), *(extra or [])],
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


def engine_under_test() -> dict[str, str | None]:
    """Where the imported ``stabilize`` comes from, and that checkout's commit."""
    path = Path(stabilize.__file__ or "").resolve().parent
    try:
        commit: str | None = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"path": str(path), "commit": commit}


def run_modes(
    name: str, target: Target, modes: list[str], repeat: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``repeat`` repetitions of one workload in each mode (modes alternate); summaries.

    Returns:
        (summaries, skipped): one summary per mode, or one skip entry per mode when the
        engine under test cannot run the workload.
    """
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    started = time.monotonic()
    for _ in range(repeat):
        for mode in modes:
            result = spawn(name, target, ["--mode", mode])
            if "skipped" in result:
                return [], [
                    {"workload": name, "mode": m, "skipped": result["skipped"]} for m in modes
                ]
            runs[mode].append(result)
    how = "" if modes == ["drain"] else f" ({', '.join(modes)})"
    print(f"  ran {name} x{repeat}{how} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return [summarise(name, runs[mode]) for mode in modes], []


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
    parser.add_argument(
        "--mode",
        choices=[*MODES, "both"],
        default="drain",
        help="drain: submit, then QueueProcessor.process_all() (the default); service: "
        "QueueProcessor.start() runs in the background while the workflows are submitted; "
        "both: each repetition in both modes, reported side by side",
    )
    parser.add_argument(
        "--series",
        action="store_true",
        help="run the size series (small/large pairs: "
        + ", ".join(f"{a}/{b}" for a, b in SERIES)
        + ") and report the ratios large/small of the cost per stage",
    )
    parser.add_argument(
        "--latency",
        action="store_true",
        help=f"also run the {LATENCY_WORKLOAD} benchmark (alone: --only {LATENCY_WORKLOAD})",
    )
    parser.add_argument(
        "--latency-workflows",
        type=int,
        default=LATENCY_WORKFLOWS,
        help=f"workflows per {LATENCY_WORKLOAD} repetition (default {LATENCY_WORKFLOWS})",
    )
    parser.add_argument(
        "--latency-idle-ms",
        type=float,
        default=LATENCY_IDLE_MS,
        help=f"idle time before each {LATENCY_WORKLOAD} submission (default {LATENCY_IDLE_MS:g})",
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
        help=f"poll_frequency_ms of the {WORKERS_WORKLOAD} workers and of the "
        f"{LATENCY_WORKLOAD} worker (default 50, the engine's)",
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also dump all results as JSON (to PATH, or stdout without one)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("OLD_JSON", "NEW_JSON"),
        help="print a before/after markdown table of two --json dumps (see compare.py)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--db", help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        metavar="NAME",
        help="cProfile one workload in-process (with --mode service: the processor's thread)",
    )
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)
    target = Target(args.backend, args.journal, args.pg_url, args.events)
    inner = args.worker or args.child or args.profile

    if args.compare:
        from compare import compare

        print(compare(*args.compare))
        return 0
    if args.events == "compare" and not inner:
        if args.mode == "both":
            parser.error("--events compare takes --mode drain or service, not both")
        return compare_events(args, target)
    if args.worker:
        return worker(target, args.db, args.poll_ms, args.mode)
    if args.child:
        return child(args.child, target, args)
    if args.profile:
        if args.mode == "both":
            parser.error("--profile takes --mode drain or service, not both")
        if args.profile not in [*BY_NAME, WORKERS_WORKLOAD]:
            parser.error(f"cannot profile {args.profile!r}; known: {sorted(BY_NAME)}")
        return profile(args.profile, target, args.profile_top, args.mode, args.poll_ms)

    # The wide workloads and the others of EXTRA_WORKLOADS run only when named with --only
    # (or by --series).
    known = [*BY_NAME, WORKERS_WORKLOAD, LATENCY_WORKLOAD]
    names = [w.name for w in WORKLOADS] + [WORKERS_WORKLOAD]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in known]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; known: {sorted(known)}")
    elif args.series:
        names = [n for pair in SERIES for n in pair]
    if args.latency and LATENCY_WORKLOAD not in names:
        names.append(LATENCY_WORKLOAD)
    worker_counts = [int(n) for n in args.workers.split(",") if n.strip()]
    modes = list(MODES) if args.mode == "both" else [args.mode]
    engine = engine_under_test()
    print(f"  engine under test: {engine['path']} ({engine['commit']})", file=sys.stderr)

    results: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for name in names:
        if name in (WORKERS_WORKLOAD, LATENCY_WORKLOAD):
            continue
        summaries, skips = run_modes(name, target, modes, args.repeat)
        results += summaries
        skipped += skips
        for skip in skips[:1]:
            print(f"  {skip['skipped']}", file=sys.stderr)
    worker_results = []
    if WORKERS_WORKLOAD in names:
        for n in worker_counts:
            started = time.monotonic()
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
            for _ in range(args.repeat):
                for mode in modes:
                    runs[mode].append(run_workers(n, target, args.poll_ms, mode))
            worker_results += [summarise_workers(n, runs[mode]) for mode in modes]
            print(
                f"  ran {WORKERS_WORKLOAD} with {n} worker(s) x{args.repeat} in "
                f"{time.monotonic() - started:.1f} s",
                file=sys.stderr,
            )
    latency_results = []
    if LATENCY_WORKLOAD in names:
        started = time.monotonic()
        extra = [
            "--poll-ms",
            str(args.poll_ms),
            "--latency-workflows",
            str(args.latency_workflows),
            "--latency-idle-ms",
            str(args.latency_idle_ms),
        ]
        latency_runs = [spawn(LATENCY_WORKLOAD, target, extra) for _ in range(args.repeat)]
        latency_results.append(summarise_latency(latency_runs))
        print(
            f"  ran {LATENCY_WORKLOAD} x{args.repeat} in {time.monotonic() - started:.1f} s",
            file=sys.stderr,
        )
    measured = [*results, *worker_results, *latency_results]
    if not measured:
        print_skipped(skipped)
        return 1
    first = measured[0]["runs"][0]
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
        "mode": args.mode,
        "engine": engine,
    }
    series = []
    for mode in modes:
        in_mode = [r for r in results if r["mode"] == mode]
        print_report(in_mode, env, mode)
        print_workers_report([r for r in worker_results if r["mode"] == mode], env, mode)
        series += series_rows(in_mode, mode)
    if len(modes) > 1:
        print_modes(results, worker_results)
    for mode in modes:
        print_series([row for row in series if row["mode"] == mode])
    for summary in latency_results:
        print_latency(summary, env)
    print_skipped(skipped)
    if args.json is not None:
        dump: dict[str, Any] = {
            "environment": env,
            "results": results + skipped,
            "workers": worker_results,
        }
        if latency_results:
            dump["latency"] = latency_results
        if series:
            dump["series"] = series
        payload = json.dumps(dump, indent=2)
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
    mode = ["--mode", args.mode]
    names = [w.name for w in WORKLOADS]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip() in BY_NAME]
    rows: list[dict[str, Any]] = []
    for name in names:
        runs: dict[str, list[float]] = {"on": [], "off": []}
        for _ in range(args.repeat):
            runs["on"].append(spawn(name, on, mode)["stages_per_s"])
            runs["off"].append(spawn(name, off, mode)["stages_per_s"])
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
