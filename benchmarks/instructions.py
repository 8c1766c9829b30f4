"""Instructions per stage, counted by valgrind's callgrind: a figure that repeats.

Wall and CPU time move by tens of per cent on a shared machine; the number of
instructions the interpreter executes does not (two runs of one tree: 1,587,554 and
1,584,760 per ``linear_100`` stage). Each workload runs twice under
``valgrind --tool=callgrind``: once with its work (store + start + ``process_all()``, as
the drain benchmark times them) and once without (the same process up to the work);
the difference divided by the stage runs is the engine's instructions per stage, all
threads included. Under valgrind threads take turns, so workloads that run tasks side
by side may batch differently than natively: compare two trees with it, do not predict
a native run from it.

Usage (from the repository root; needs Debian's ``valgrind``)::

    uv run python benchmarks/instructions.py --only linear_100,fanout_200
    uv run python benchmarks/instructions.py --only linear_100 \
        --pythonpath ../old/packages/stabilize-core/src
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from harness import Target, env_with_engine, fresh_database
from measure import setup_for, submit
from workloads import BY_NAME

HERE = Path(__file__).resolve()
_COLLECTED = re.compile(r"Collected : (\d+)")


def collected(valgrind_output: str) -> int:
    """The instruction count callgrind printed (``==pid== Collected : N``).

    Raises:
        ValueError: the output has no such line (valgrind failed, or is not callgrind).
    """
    found = _COLLECTED.findall(valgrind_output)
    if not found:
        tail = valgrind_output.strip().splitlines()[-5:]
        raise ValueError("callgrind printed no instruction count:\n" + "\n".join(tail))
    return int(found[-1])


def per_stage(with_work: int, without: int, stages: int) -> int:
    """Instructions per stage: what the work added, over the stage runs."""
    if stages < 1:
        raise ValueError(f"a workload of {stages} stage runs cannot be counted per stage")
    return (with_work - without) // stages


def child(name: str, work: bool) -> None:
    """The measured process: a fresh SQLite database, the workload built, and its work."""
    workload = BY_NAME[name]
    with fresh_database(Target()) as db:
        setup = setup_for(db)
        if workload.register is not None:
            workload.register(setup.processor.task_registry)
        workflows = workload.build()
        if work:
            submit(setup, workflows)
            setup.processor.process_all(timeout=600)
        setup.store.backend.close()


def count(name: str, work: bool, pythonpath: str | None) -> int:
    """Run :func:`child` under callgrind; return the instructions it executed."""
    env = env_with_engine(pythonpath) if pythonpath else dict(os.environ)
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        str(HERE),
        "--child",
        name,
        "--work",
        "1" if work else "0",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the counted run failed:\n{done.stderr[-2000:]}")
    return collected(done.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--only", default="linear_100", help="comma-separated workload names")
    parser.add_argument("--pythonpath", help="put another checkout's engine first (compare)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", default="1", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.work == "1")
        return 0
    if args.pythonpath:
        try:
            env_with_engine(args.pythonpath)
        except ValueError as exc:
            parser.error(f"--pythonpath {exc}")
    if shutil.which("valgrind") is None:
        parser.error("valgrind is not installed (Debian: apt-get install valgrind)")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BY_NAME]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; known: {sorted(BY_NAME)}")
    engine = args.pythonpath or "this tree"
    print(f"instructions per stage (callgrind, drain: store + start + process_all), {engine}")
    for name in names:
        stages = BY_NAME[name].stage_runs
        with_work = count(name, True, args.pythonpath)
        figure = per_stage(with_work, count(name, False, args.pythonpath), stages)
        print(f"{name:<20} {figure:>12,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
