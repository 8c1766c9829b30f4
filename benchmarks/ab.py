"""A/B runs of the suite: two engines alternating, the order flipped every round, pooled.

On a machine shared with other work, the second of two back-to-back runs can be slower
for reasons of its own (seen in session 11: 4 to 11 % on code paths that had not
changed). Alternating the sides and flipping their order every round spreads that over
both. Each side's dumps are then pooled into one (every row's repetitions together,
summarised again) and the before/after tables of ``compare.py`` are printed.

Usage (from the repository root; everything after ``--`` goes to ``run.py``)::

    uv run python benchmarks/ab.py --old-python /path/to/old/.venv/bin/python \\
        --rounds 4 --out /tmp/ab -- --only linear_100,fanout_200 --mode service --repeat 3
    uv run python benchmarks/ab.py --old-pythonpath /path/to/old/packages/stabilize-core/src \\
        -- --only linear_100

``--old-python`` runs the old side with another checkout's interpreter (as "Before and
after a change" in the README describes); ``--old-pythonpath`` runs it with this
interpreter and the other checkout's engine first on ``PYTHONPATH``. Dumps are kept in
``--out`` (``old_1.json``, ``new_1.json``, ... and the pooled ``old.json``, ``new.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compare import compare
from harness import env_with_engine
from latency import summarise_latency
from report import summarise
from workers import summarise_workers

RUN_PY = Path(__file__).resolve().with_name("run.py")
SIDES = ("old", "new")


def round_order(number: int) -> tuple[str, str]:
    """The order of the sides in round ``number`` (from 1): old first in odd rounds."""
    return SIDES if number % 2 == 1 else (SIDES[1], SIDES[0])


RowKey = tuple[str, str, int | None, int | None]


def _key(entry: dict[str, Any]) -> RowKey:
    mode = entry.get("mode", "drain")
    return (entry["workload"], mode, entry.get("workers"), entry.get("poll_ms"))


def _summarise_results(key: RowKey, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return summarise(key[0], runs)


def _summarise_workers(key: RowKey, runs: list[dict[str, Any]]) -> dict[str, Any]:
    workers = key[2]
    if workers is None:
        raise ValueError(f"a workers_200 row without its number of workers: {key}")
    return summarise_workers(workers, runs)


def _summarise_latency(key: RowKey, runs: list[dict[str, Any]]) -> dict[str, Any]:
    del key
    return summarise_latency(runs)


SECTIONS: dict[str, Callable[[RowKey, list[dict[str, Any]]], dict[str, Any]]] = {
    "results": _summarise_results,
    "workers": _summarise_workers,
    "latency": _summarise_latency,
}


def pool_dumps(dumps: list[dict[str, Any]]) -> dict[str, Any]:
    """One dump whose every row holds the repetitions of that row in all of ``dumps``.

    Rows are matched on workload, mode, worker processes and poll interval, in the order
    they first appear; skipped rows are left out. The environment is the first dump's,
    with ``pooled_dumps`` saying how many were pooled.

    Raises:
        ValueError: ``dumps`` is empty, or they are of different databases or settings.
    """
    if not dumps:
        raise ValueError("nothing to pool")
    env = dumps[0]["environment"]
    for dump in dumps[1:]:
        other = dump["environment"]
        for field in ("backend", "events", "journal_mode"):
            if other.get(field) != env.get(field):
                raise ValueError(
                    f"cannot pool runs of different {field}: {env.get(field)!r} and "
                    f"{other.get(field)!r}"
                )
    pooled: dict[str, Any] = {"environment": {**env, "pooled_dumps": len(dumps)}}
    for section, summarise_rows in SECTIONS.items():
        grouped: dict[RowKey, list[dict[str, Any]]] = {}
        for dump in dumps:
            for entry in dump.get(section, []):
                if "skipped" not in entry:
                    grouped.setdefault(_key(entry), []).extend(entry["runs"])
        pooled[section] = [summarise_rows(key, runs) for key, runs in grouped.items()]
    return pooled


def side_command(
    side: str, args: argparse.Namespace, run_args: list[str], out: Path
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that run ``run.py`` for ``side``, dumping to ``out``."""
    env = dict(os.environ)
    python = sys.executable
    if side == "old":
        if args.old_python:
            python = args.old_python
        if args.old_pythonpath:
            env = env_with_engine(args.old_pythonpath)
    return [python, str(RUN_PY), *run_args, "--json", str(out)], env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ours, run_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--old-python", help="the interpreter of the old checkout")
    parser.add_argument("--old-pythonpath", help="the old checkout's engine sources")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default="ab-results", help="where the dumps go")
    args = parser.parse_args(ours)
    if not (args.old_python or args.old_pythonpath):
        parser.error("say where the old engine is: --old-python or --old-pythonpath")
    if args.old_python and not os.access(args.old_python, os.X_OK):
        parser.error(f"--old-python {args.old_python}: not an executable interpreter")
    if args.old_pythonpath:
        try:
            env_with_engine(args.old_pythonpath)
        except ValueError as exc:
            parser.error(f"--old-pythonpath {exc}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if "--json" in run_args:
        parser.error("ab.py writes the dumps itself: leave --json out of run.py's arguments")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dumps: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for number in range(1, args.rounds + 1):
        for side in round_order(number):
            path = out / f"{side}_{number}.json"
            command, env = side_command(side, args, run_args, path)
            print(f"round {number}/{args.rounds}: {side}", file=sys.stderr)
            done = subprocess.run(command, env=env, check=False, stdout=subprocess.DEVNULL)
            if done.returncode != 0:  # run.py said why on stderr
                raise SystemExit(f"round {number}: the {side} side's run.py failed")
            dumps[side].append(json.loads(path.read_text()))
    for side in SIDES:
        (out / f"{side}.json").write_text(json.dumps(pool_dumps(dumps[side]), indent=2) + "\n")
    print(compare(str(out / "old.json"), str(out / "new.json")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
