"""A worker process for the multi-process join races of test_control_flow.py (not a test).

Usage::

    python flow_worker.py DB_URL --started FILE --release FILE --joins FILE --stop FILE
        [--max-workers N] [--poll-ms MS]

It runs ``QueueProcessor.start()`` on a WAL SQLite file until the ``--stop`` file appears.

Task types:
    root: succeed.
    branch: append ``<workflow id>\\t<stage ref>`` to ``--started``, wait (polling every 5 ms,
        at most 30 s) for the ``--release`` file, then succeed with ``{"winner": ref}``.
    join: append ``<workflow id>\\t<pid>`` to ``--joins`` and succeed.

Each line is one ``write`` on an ``O_APPEND`` descriptor, so lines of processes never
interleave. The process exits 0 when the processor logged no error, 3 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stabilize import StageExecution, TaskRegistry, TaskResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import append, registry_of, serve_sqlite, wait_for_file

WAIT_LIMIT_S = 30.0
POLL_S = 0.005


def build_registry(started: str, release: Path, joins: str) -> TaskRegistry:
    def root(stage: StageExecution) -> TaskResult:
        return TaskResult.success()

    def branch(stage: StageExecution) -> TaskResult:
        append(started, f"{stage.workflow_id}\t{stage.ref_id}")
        if not wait_for_file(release, poll_s=POLL_S, limit_s=WAIT_LIMIT_S):
            return TaskResult.terminal(f"{release} did not appear within {WAIT_LIMIT_S}s")
        return TaskResult.success(outputs={"winner": stage.ref_id})

    def join(stage: StageExecution) -> TaskResult:
        append(joins, f"{stage.workflow_id}\t{os.getpid()}")
        return TaskResult.success()

    return registry_of(root, branch, join)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("--started", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--joins", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--max-workers", type=int, default=16)
    p.add_argument("--poll-ms", type=int, default=10, help="the processor's poll interval")
    args = p.parse_args(argv)

    return serve_sqlite(
        args.db_url,
        build_registry(args.started, Path(args.release), args.joins),
        Path(args.stop),
        max_workers=args.max_workers,
        poll_s=POLL_S,
        poll_ms=args.poll_ms,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
