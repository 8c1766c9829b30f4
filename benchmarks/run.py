"""Run the stabilize benchmark suite and compare it with the targets.

Usage (from the repository root)::

    uv run python benchmarks/run.py [--only NAME[,NAME...]] [--journal WAL|DELETE]
                                    [--repeat N] [--json [PATH]]
    uv run python benchmarks/run.py --profile NAME [--profile-top N]

Every repetition of every workload runs in a fresh child process
(``run.py --child NAME``) so that its peak RSS is its own; the child prints one JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from workloads import BY_NAME, WORKLOADS, run_once

HERE = Path(__file__).resolve()

# The targets (SQLite WAL, process_all, 2 cores).
TARGET_STAGES_PER_S = 2000.0  # on linear_100 and fanout_200
TARGET_COMMITS_PER_STAGE = 2.0  # single-task stages
TARGET_PEAK_RSS_MB = 100.0
# "Flat" cost per stage from width 100 to 400: we accept up to 25 % more per stage at 400.
TARGET_WIDTH_RATIO = 1.25
THROUGHPUT_WORKLOADS = ("linear_100", "fanout_200")
WIDTH_SERIES = ("fanout_100", "fanout_200", "fanout_400")


def child(name: str, journal: str) -> int:
    """Run one workload once and print its figures as one JSON line."""
    result = run_once(BY_NAME[name], journal)
    # Linux reports ru_maxrss in KiB (macOS in bytes).
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["peak_rss_kib"] = maxrss // 1024 if sys.platform == "darwin" else maxrss
    print(json.dumps(result), flush=True)
    return 0


def spawn(name: str, journal: str) -> dict[str, Any]:
    """Run one repetition in a fresh interpreter and return its JSON line."""
    proc = subprocess.run(
        [sys.executable, str(HERE), "--child", name, "--journal", journal],
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


def print_report(results: list[dict[str, Any]], env: dict[str, Any]) -> None:
    print(
        f"\nstabilize benchmarks — SQLite {env['sqlite_version']}, journal_mode="
        f"{env['journal_mode']}, synchronous={env['synchronous']}, Python {env['python']}, "
        f"{env['cpus']} CPU(s), {env['repeats']} repetitions each (fresh process per run)\n"
    )
    header = (
        f"{'workload':<18} {'stages':>6} {'best st/s':>10} {'med st/s':>9} {'med µs/st':>10} "
        f"{'commits/st':>10} {'peak RSS MB':>11}  targets"
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
            f"{r['commits_per_stage']:>10.2f} {r['peak_rss_mb']:>11.1f}  {', '.join(notes)}"
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
    if env["journal_mode"] != "WAL":
        print(
            f"note: the targets are defined for WAL; this run used {env['journal_mode']} "
            f"(synchronous={env['synchronous']}), so the verdicts are for reference only."
        )
    print(
        "commits = every write transaction on the file during store + start + process_all "
        "(store, orchestrator and processor), divided by stage runs."
    )


def profile(name: str, journal: str, top: int) -> int:
    """Run one workload once in this process under cProfile and print the hotspots."""
    run_once(BY_NAME[name], journal)  # warm-up: imports, SQL parsing caches
    profiler = cProfile.Profile()
    profiler.enable()
    result = run_once(BY_NAME[name], journal)
    profiler.disable()
    print(
        f"profiled {name}: {result['stages_executed']} stages in {result['wall_s']:.3f} s "
        f"({result['stages_per_s']:,.0f} stages/s under the profiler; main thread only)"
    )
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(key).print_stats(top)
        print(out.getvalue())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--only", help="comma-separated workload names", default=None)
    parser.add_argument("--journal", choices=["WAL", "DELETE"], default="WAL")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        default=None,
        metavar="PATH",
        help="also dump all results as JSON (to PATH, or stdout without one)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="NAME", help="cProfile one workload in-process")
    parser.add_argument("--profile-top", type=int, default=30)
    args = parser.parse_args(argv)

    if args.child:
        return child(args.child, args.journal)
    if args.profile:
        return profile(args.profile, args.journal, args.profile_top)

    names = [w.name for w in WORKLOADS]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in BY_NAME]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; known: {sorted(BY_NAME)}")

    results = []
    for name in names:
        started = time.monotonic()
        runs = [spawn(name, args.journal) for _ in range(args.repeat)]
        results.append(summarise(name, runs))
        print(f"  ran {name} x{args.repeat} in {time.monotonic() - started:.1f} s", file=sys.stderr)
    first = results[0]["runs"][0]
    env = {
        "sqlite_version": first["sqlite_version"],
        "journal_mode": first["journal_mode"],
        "synchronous": first["synchronous"],
        "python": platform.python_version(),
        "cpus": len(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "repeats": args.repeat,
        "platform": platform.platform(),
    }
    print_report(results, env)
    if args.json is not None:
        payload = json.dumps({"environment": env, "results": results}, indent=2)
        if args.json == "-":
            print(payload)
        else:
            Path(args.json).write_text(payload + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
