"""A worker process for the cross-process mutex test of test_state_patterns_engine.py (not a test).

Usage::

    python mutex_worker.py DB_URL --log FILE --release FILE --stop FILE [--max-workers N]

It runs ``QueueProcessor.start()`` on a WAL SQLite file until the ``--stop`` file appears.

Task types:
    gate: append ``gate <workflow id> <pid>`` to ``--log``, wait (polling every 5 ms, at
        most 30 s) for the ``--release`` file, then succeed. With as many workflows as the
        processes have worker threads, every process holds gates when the file appears, so
        the critical stages behind them ask for their mutex in all processes at once.
    crit: the critical section of a stage with a ``mutex_key``. It appends
        ``enter <key> <workflow id> <pid> <holder>`` to ``--log``, where ``<holder>`` is
        ``ok`` when the database's ``mutex_holders`` row for the key names this stage (else
        ``bad``), reads the database a few times (real work that takes a moment, no sleep),
        then appends ``exit <key> <workflow id> <pid>`` and succeeds.
    free: succeed (a stage without a mutex that runs beside the critical one).
    child: append ``child <workflow id> <pid>`` to ``--log`` and succeed with
        ``{"child_pid": pid}`` (a stage of a sub-workflow).

Each line is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so lines of
processes never interleave and their order in the file is the order they were written.
The process exits 0 when the processor logged no error, 3 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import sys
from pathlib import Path

from stabilize import StageExecution, TaskRegistry, TaskResult
from stabilize.backends.sqlite import sqlite_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import append, registry_of, serve_sqlite, wait_for_file

POLL_S = 0.005
WAIT_LIMIT_S = 30.0


def build_registry(db_file: str, log: str, release: Path) -> TaskRegistry:
    def gate(stage: StageExecution) -> TaskResult:
        append(log, f"gate {stage.workflow_id} {os.getpid()}")
        if not wait_for_file(release, poll_s=POLL_S, limit_s=WAIT_LIMIT_S):
            return TaskResult.terminal(f"{release} did not appear within {WAIT_LIMIT_S}s")
        return TaskResult.success()

    def crit(stage: StageExecution) -> TaskResult:
        key = str(stage.context["key"])
        wf = stage.workflow_id
        with contextlib.closing(sqlite3.connect(db_file, timeout=30)) as conn:
            row = conn.execute(
                "SELECT workflow_id, stage_id FROM mutex_holders WHERE key = ?", (key,)
            ).fetchone()
            holder = "ok" if row is not None and tuple(row) == (wf, stage.id) else "bad"
            append(log, f"enter {key} {wf} {os.getpid()} {holder}")
            for _ in range(5):
                conn.execute("SELECT count(*) FROM stages").fetchone()
        append(log, f"exit {key} {wf} {os.getpid()}")
        return TaskResult.success(outputs={"pid": os.getpid()})

    def free(stage: StageExecution) -> TaskResult:
        return TaskResult.success()

    def child(stage: StageExecution) -> TaskResult:
        append(log, f"child {stage.workflow_id} {os.getpid()}")
        return TaskResult.success(outputs={"child_pid": os.getpid()})

    return registry_of(gate, crit, free, child)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("--log", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--max-workers", type=int, default=8)
    args = p.parse_args(argv)

    return serve_sqlite(
        args.db_url,
        build_registry(sqlite_path(args.db_url), args.log, Path(args.release)),
        Path(args.stop),
        max_workers=args.max_workers,
        poll_s=POLL_S,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
