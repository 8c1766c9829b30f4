"""Summaries over repetitions and the printed tables of ``run.py``."""

from __future__ import annotations

import statistics
from typing import Any

from workloads import (
    BY_NAME,
    SERIES,
    WORKERS_STAGES_PER_WORKFLOW,
    WORKERS_WORKFLOWS,
    WORKERS_WORKLOAD,
)

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

SERVICE_NOTE = (
    "service mode: QueueProcessor.start() runs in the background before the clock starts; "
    "wall = first submission -> the commit that finished the last workflow."
)


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and median over the repetitions of one workload."""
    rates = [r["stages_per_s"] for r in runs]
    per_stage = [r["us_per_stage"] for r in runs]
    cps = [r["commits_per_stage"] for r in runs]
    first = runs[0]
    summary = {
        "workload": name,
        "mode": first.get("mode", "drain"),
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
    server = [r.get("server_cpu_us_per_stage") for r in runs]
    if all(us is not None for us in server):
        summary["median_server_cpu_us_per_stage"] = statistics.median(
            us for us in server if us is not None
        )
    return summary


def server_cell(summary: dict[str, Any], width: int) -> str:
    """The median server CPU per stage of ``summary``, right-aligned (``-``: not measured)."""
    us = summary.get("median_server_cpu_us_per_stage")
    return f"{us:>{width},.0f}" if us is not None else f"{'-':>{width}}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def describe_env(env: dict[str, Any]) -> str:
    if env["backend"] == "sqlite":
        return (
            f"{env['database']}, journal_mode={env['journal_mode']}, "
            f"synchronous={env['synchronous']}, event recording {env['events']}"
        )
    return f"{env['database']}, {env['synchronous']}, event recording {env['events']}"


def print_skipped(skipped: list[dict[str, Any]]) -> None:
    for s in skipped:
        print(f"\n{s['workload']} ({s['mode']} mode): {s['skipped']}")


def print_report(results: list[dict[str, Any]], env: dict[str, Any], mode: str = "drain") -> None:
    if not results:
        return
    title = "stabilize benchmarks" if mode == "drain" else "stabilize benchmarks, service mode"
    print(
        f"\n{title} — {describe_env(env)}, Python {env['python']}, "
        f"{env['cpus']} CPU(s), {env['repeats']} repetitions each (fresh process per run)\n"
    )
    postgres = env["backend"] == "postgres"
    server_head = f" {'server CPU µs/st':>16}" if postgres else ""
    header = (
        f"{'workload':<18} {'stages':>6} {'best st/s':>10} {'med st/s':>9} {'med µs/st':>10} "
        f"{'CPU µs/st':>9}{server_head} {'commits/st':>10} {'peak RSS MB':>11}  targets"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        notes = []
        if r["workload"] in THROUGHPUT_WORKLOADS:
            ok = r["median_stages_per_s"] >= TARGET_STAGES_PER_S
            notes.append(f"st/s>={TARGET_STAGES_PER_S:,.0f} {verdict(ok)}")
        if BY_NAME[r["workload"]].stages is None:
            ok = r["max_commits_per_stage"] <= TARGET_COMMITS_PER_STAGE
            notes.append(f"commits<={TARGET_COMMITS_PER_STAGE:g} {verdict(ok)}")
        ok = r["peak_rss_mb"] < TARGET_PEAK_RSS_MB
        notes.append(f"RSS<{TARGET_PEAK_RSS_MB:g} {verdict(ok)}")
        print(
            f"{r['workload']:<18} {r['stages_executed']:>6} {r['best_stages_per_s']:>10,.0f} "
            f"{r['median_stages_per_s']:>9,.0f} {r['median_us_per_stage']:>10,.0f} "
            f"{r['median_cpu_us_per_stage']:>9,.0f}"
            f"{' ' + server_cell(r, 16) if postgres else ''} {r['commits_per_stage']:>10.2f} "
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
            "targets are those of workers_200. Server CPU = user + system time of the local "
            "PostgreSQL server's processes per stage over the run ('-': a server elsewhere)."
        )
    elif env["journal_mode"] != "WAL":
        print(
            f"note: the targets are defined for WAL; this run used {env['journal_mode']} "
            f"(synchronous={env['synchronous']}), so the verdicts are for reference only."
        )
    if mode == "drain":
        print(
            "commits = every write transaction on the database during store + start + "
            "process_all (store, orchestrator and processor), divided by stage runs."
        )
    else:
        print(SERVICE_NOTE)
        print(
            "commits = every write transaction on the database from the first submission to "
            "the end (store, orchestrator and processor), divided by stage runs."
        )
    agent = by_name.get("agent_loop_20")
    if agent is not None:
        print(
            "agent_loop_20: a stage is one agent loop of 7 task executions (4 model calls, "
            "3 tool calls), each checkpointed; the commit target is for single-task stages."
        )


def print_workers_report(
    results: list[dict[str, Any]], env: dict[str, Any], mode: str = "drain"
) -> None:
    if not results:
        return
    how = "N worker processes" if mode == "drain" else "N worker processes in service mode"
    print(
        f"\n{WORKERS_WORKLOAD} — {WORKERS_WORKFLOWS} workflows x {WORKERS_STAGES_PER_WORKFLOW} "
        f"stages (chains and fan-outs), {how}, {describe_env(env)}, "
        f"{env['cpus']} CPU(s), {env['repeats']} repetitions each\n"
    )
    header = (
        f"{'workers':>7} {'stages':>6} {'best st/s':>10} {'med st/s':>9} {'med wall s':>10} "
        f"{'commits/st':>10} {'worker CPU µs/st':>16} {'server CPU µs/st':>16} "
        f"{'CPU busy':>8} {'peak RSS MB/worker':>18}  targets"
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
        if "median_submit_share" in r:
            notes.append(
                f"starts {r['median_submit_s']:.3f} s = "
                f"{100 * r['median_submit_share']:.0f}% of wall"
            )
        print(
            f"{r['workers']:>7} {r['stages_executed']:>6} {r['best_stages_per_s']:>10,.0f} "
            f"{r['median_stages_per_s']:>9,.0f} {r['median_wall_s']:>10.3f} "
            f"{r['commits_per_stage']:>10.2f} {r['median_worker_cpu_us_per_stage']:>16,.0f} "
            f"{server_cell(r, 16)} "
            f"{100 * r['median_machine_busy']:>7.0f}% {r['peak_rss_mb']:>18.1f}  "
            f"{', '.join(notes)}"
        )
    if mode == "drain":
        print(
            "\ntargets (PostgreSQL, 2 cores): >= 1,000 stages/s with 1 worker, >= 2,000 with 4, "
            "<= 2 commits per single-task stage. Wall = workers told to go -> commit of the "
            "last workflow; commits = submissions (store + start) + every worker transaction; "
            "worker CPU = user + system time of the worker processes per stage; server CPU = "
            "the same for the local PostgreSQL server's processes ('-': SQLite, or a server "
            "elsewhere); CPU busy = share of all CPUs busy during the run (workers, database "
            "server and all)."
        )
    else:
        print(
            "\nservice mode: the 200 workflows are stored first (not timed, nothing to claim "
            "yet); each worker runs QueueProcessor.start() (told to go, idle); then the parent "
            "starts the 200 workflows from 8 threads while the workers work. Wall = just "
            "before the first start (the first message that can be claimed) -> commit of the "
            "last workflow; 'starts' = how long the 200 starts took, the part of the wall "
            "during which work was still arriving. Commits, worker CPU and CPU busy as in "
            "drain mode; server CPU includes the server's work for the starts."
        )


def _ratio(new: float, old: float) -> str:
    return f"x{new / old:.2f}" if old else "-"


def _key(r: dict[str, Any]) -> tuple[str, int | None]:
    return r["workload"], r.get("workers")


def print_modes(results: list[dict[str, Any]], workers: list[dict[str, Any]]) -> None:
    """Drain and service side by side, per workload (and per worker count)."""
    every = [*results, *workers]
    drained = {_key(r): r for r in every if r.get("mode", "drain") == "drain"}
    served = {_key(r): r for r in every if r.get("mode") == "service"}
    keys = [k for k in drained if k in served]
    if not keys:
        return
    print("\ndrain (process_all) vs service (start() in the background), medians\n")
    header = (
        f"{'workload':<20} {'drain st/s':>10} {'service st/s':>12} {'service/drain':>13} "
        f"{'drain CPU µs/st':>15} {'service CPU µs/st':>17} {'commits/st d|s':>15} "
        f"{'RSS MB d|s':>15}"
    )
    print(header)
    print("-" * len(header))
    for key in keys:
        d, s = drained[key], served[key]
        name = key[0] if key[1] is None else f"{key[0]} x{key[1]}"
        cpu = "median_cpu_us_per_stage" if key[1] is None else "median_worker_cpu_us_per_stage"
        line = (
            f"{name:<20} {d['median_stages_per_s']:>10,.0f} {s['median_stages_per_s']:>12,.0f} "
            f"{_ratio(s['median_stages_per_s'], d['median_stages_per_s']):>13} "
            f"{d[cpu]:>15,.0f} {s[cpu]:>17,.0f} "
            f"{d['commits_per_stage']:>7.2f}|{s['commits_per_stage']:<7.2f} "
            f"{d['peak_rss_mb']:>7.1f}|{s['peak_rss_mb']:<7.1f}"
        )
        print(line.rstrip())
    print(
        "workers_200 CPU is the worker processes' CPU per stage; in service mode the parent "
        "starts the stored workflows while the workers run (drain: stored and started "
        "before the clock)."
    )


def _rss_per_stage(r: dict[str, Any]) -> float:
    """KiB of peak RSS above the RSS just before the run, per stage run."""
    return float(1024 * (r["peak_rss_mb"] - r["baseline_rss_mb"]) / r["stages_executed"])


def series_rows(results: list[dict[str, Any]], mode: str) -> list[dict[str, Any]]:
    """The ratios large/small of each size pair whose two workloads ran in ``mode``."""
    by_name = {r["workload"]: r for r in results if r.get("mode", "drain") == mode}
    rows = []
    for small_name, large_name in SERIES:
        small, large = by_name.get(small_name), by_name.get(large_name)
        if small is None or large is None:
            continue
        row: dict[str, Any] = {"small": small_name, "large": large_name, "mode": mode}
        for key, value in (
            ("wall_us_per_stage", lambda r: r["median_us_per_stage"]),
            ("cpu_us_per_stage", lambda r: r["median_cpu_us_per_stage"]),
            ("rss_kib_per_stage", _rss_per_stage),
            ("peak_rss_mb", lambda r: r["peak_rss_mb"]),
        ):
            a, b = value(small), value(large)
            row[key] = [a, b, b / a if a else None]
        rows.append(row)
    return rows


def print_series(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print(
        f"\nsize series ({rows[0]['mode']} mode): cost per stage, small -> large "
        "(ratio large/small; flat = x1)\n"
    )
    header = (
        f"{'pair':<28} {'wall µs/stage':>25} {'CPU µs/stage':>25} "
        f"{'RSS KB/stage above base':>25} {'peak RSS MB':>25}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        cells = []
        for key, fmt in (
            ("wall_us_per_stage", ",.0f"),
            ("cpu_us_per_stage", ",.0f"),
            ("rss_kib_per_stage", ",.1f"),
            ("peak_rss_mb", ",.1f"),
        ):
            a, b, ratio = row[key]
            x = f"x{ratio:.2f}" if ratio is not None else "-"
            cells.append(f"{format(a, fmt)} -> {format(b, fmt)} {x}")
        print(
            f"{row['small'] + ' -> ' + row['large']:<28} {cells[0]:>25} {cells[1]:>25} "
            f"{cells[2]:>25} {cells[3]:>25}"
        )
    print(
        "RSS KB/stage above base = (peak RSS - RSS just before the run) / stage runs; the "
        "small runs' figure is dominated by fixed costs (threads, caches), so read the "
        "totals too."
    )
