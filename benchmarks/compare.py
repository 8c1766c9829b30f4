"""Before/after markdown tables from ``run.py --json`` dumps.

Usage (from the repository root)::

    uv run python benchmarks/compare.py OLD_JSON NEW_JSON   # also: run.py --compare OLD NEW
    uv run python benchmarks/compare.py --merge ALL.json A.json B.json ...

A dump is what one ``run.py --json PATH`` wrote; ``--merge`` puts several into one file
(``{"dumps": [...]}``: say the SQLite suite in both modes, the PostgreSQL one, the series
and the latency run), and a merged file is read like a single dump. Rows are matched on
(backend, event recording, mode, workload, worker processes or the latency worker's poll
interval), in the order they were run; a row found on one side only has dashes on the other.
A workload found in two dumps of one side (the suite's ``fanout_100`` and the series') is
taken from the one with more repetitions.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

Key = tuple[str, str, str, str, int | None]
LATENCY_COLUMNS = (("handoff_ms", "hand-off"), ("submit_to_start_ms", "submit -> first task"))


def load(path: str) -> list[dict[str, Any]]:
    """The dumps in ``path``: one dump, or the ``dumps`` of a merged file."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict) and "dumps" in data:
        dumps: list[dict[str, Any]] = data["dumps"]
        return dumps
    if not isinstance(data, dict) or "environment" not in data:
        raise SystemExit(f"{path}: not a run.py --json dump (no 'environment')")
    return [data]


def rows(dumps: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """Every throughput and latency summary of ``dumps``, by its key."""
    found: dict[Key, dict[str, Any]] = {}
    for dump in dumps:
        env = dump["environment"]
        for entry in [*dump.get("results", []), *dump.get("workers", []), *dump.get("latency", [])]:
            if "skipped" in entry:
                continue
            # Latency runs differ by the worker's poll interval, workers_200 by the workers.
            latency = entry["workload"] == "latency"
            key = (
                env["backend"],
                env["events"],
                entry.get("mode", "drain"),
                entry["workload"],
                entry.get("poll_ms") if latency else entry.get("workers"),
            )
            # The same workload in two dumps (the suite and the series): keep the one of
            # more repetitions, the first of equals.
            if key in found and found[key].get("repeats", 0) >= entry.get("repeats", 0):
                continue
            found[key] = {**entry, "database": env.get("database", env["backend"])}
    return found


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None or not old:
        return "-"
    return f"{100 * (new / old - 1):+.0f} %"


def _get(entry: dict[str, Any] | None, *keys: str) -> float | None:
    if entry is None:
        return None
    for key in keys:
        if key in entry:
            value: float = entry[key]
            return value
    return None


def _name(key: Key) -> str:
    backend, events, mode, workload, workers = key
    name = workload if workers is None or workload == "latency" else f"{workload} x{workers}"
    db = {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(backend, backend)
    extra = "" if events == "on" else ", events off"
    return f"| {name} | {db}{extra} | {mode} "


def throughput_table(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> str:
    """Median stages/s, CPU µs/stage, commits/stage and peak RSS, before and after.

    When a row of either side measured the PostgreSQL server's CPU, the table also gives
    the server's µs per stage (``-`` where it was not measured).
    """
    keys = [k for k in {**old, **new} if k[3] != "latency"]
    server_key = "median_server_cpu_us_per_stage"
    server = any(_get(e, server_key) is not None for e in [*old.values(), *new.values()])
    head = "| workload | database | mode | stages/s before | after | change "
    head += "| CPU µs/stage before | after "
    head += "| server µs/stage before | after " if server else ""
    head += "| commits/stage before | after | peak RSS MB before | after |"
    columns = 11 if server else 9
    lines = [head, "| --- | --- | --- |" + " ---: |" * columns]
    for key in keys:
        a, b = old.get(key), new.get(key)
        rate_a = _get(a, "median_stages_per_s")
        rate_b = _get(b, "median_stages_per_s")
        cpu = ("median_cpu_us_per_stage", "median_worker_cpu_us_per_stage")
        line = (
            _name(key)
            + f"| {_cell(rate_a, ',.0f')} | {_cell(rate_b, ',.0f')} | {_change(rate_a, rate_b)} "
            f"| {_cell(_get(a, *cpu), ',.0f')} | {_cell(_get(b, *cpu), ',.0f')} "
        )
        if server:
            server_a, server_b = _get(a, server_key), _get(b, server_key)
            line += f"| {_cell(server_a, ',.0f')} | {_cell(server_b, ',.0f')} "
        lines.append(
            line + f"| {_cell(_get(a, 'commits_per_stage'), '.2f')} "
            f"| {_cell(_get(b, 'commits_per_stage'), '.2f')} "
            f"| {_cell(_get(a, 'peak_rss_mb'), '.1f')} | {_cell(_get(b, 'peak_rss_mb'), '.1f')} |"
        )
    return "\n".join(lines)


def latency_table(old: dict[Key, dict[str, Any]], new: dict[Key, dict[str, Any]]) -> str:
    """p50 and p99 of the latency figures, before and after."""
    keys = [k for k in {**old, **new} if k[3] == "latency"]
    if not keys:
        return ""
    head = "| workload | database | mode | poll ms "
    rule = "| --- | --- | --- | ---: "
    for _, label in LATENCY_COLUMNS:
        head += f"| {label} p50 ms before | after | p99 ms before | after "
        rule += "| ---: | ---: | ---: | ---: "
    lines = [head + "|", rule + "|"]
    for key in keys:
        a, b = old.get(key), new.get(key)
        poll = _get(b, "poll_ms") or _get(a, "poll_ms")
        line = _name(key) + f"| {_cell(poll, 'g')} "
        for figure, _ in LATENCY_COLUMNS:
            fa = a[figure] if a is not None else None
            fb = b[figure] if b is not None else None
            line += (
                f"| {_cell(_get(fa, 'p50'), '.2f')} | {_cell(_get(fb, 'p50'), '.2f')} "
                f"| {_cell(_get(fa, 'p99'), '.2f')} | {_cell(_get(fb, 'p99'), '.2f')} "
            )
        lines.append(line + "|")
    return "\n".join(lines)


def compare(old_path: str, new_path: str) -> str:
    """The markdown of both tables for two dumps (or merged files)."""
    old, new = rows(load(old_path)), rows(load(new_path))
    parts = [throughput_table(old, new)]
    latency = latency_table(old, new)
    if latency:
        parts.append(latency)
    return "\n\n".join(parts)


def merge(out: str, paths: list[str]) -> None:
    """Write the dumps of ``paths`` (dumps or merged files) into one merged file."""
    dumps = [d for p in paths for d in load(p)]
    Path(out).write_text(json.dumps({"dumps": dumps}, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("files", nargs="*", metavar="JSON")
    parser.add_argument("--merge", metavar="OUT", help="merge the JSON files into OUT")
    args = parser.parse_args(argv)
    if args.merge:
        if not args.files:
            parser.error("--merge OUT needs the files to merge")
        merge(args.merge, args.files)
        return 0
    if len(args.files) != 2:
        parser.error("give OLD_JSON and NEW_JSON")
    print(compare(args.files[0], args.files[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
