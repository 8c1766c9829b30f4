"""A worker process for the database-restart test (a script, not a test).

Usage::

    python pg_restart_worker.py URL LOG [--lease SECONDS] [--timeout SECONDS]

Records events with a ``PostgresEventStore`` in the engine's schema and runs
``QueueProcessor.process_all()`` until the queue is empty, then exits 0. Engine warnings
(``database error, retrying: ...``) go to stderr, which the parent reads to see that the
worker noticed an outage.

Task type ``step`` appends ``start\\t<workflow id>\\t<stage ref>\\t<idempotency key>\\t<pid>``
to LOG when it begins and ``end\\t...`` (same fields) when it returns, each line with one
``write`` on an ``O_APPEND`` descriptor and ``fsync``. If the stage's context names a
``gate`` file, the task waits (at most 50 s) for that file between the two lines, so the
parent decides when results come back. The task's output ``<stage ref>`` is its
idempotency key, so the parent can check that each stage kept the result of a run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from stabilize import QueueProcessorConfig, StageExecution, TaskResult
from stabilize.events import PostgresEventStore, configure_event_sourcing

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import AppendLog, drain_postgres, registry_of, wait_for_file


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("log")
    parser.add_argument("--lease", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=50.0)
    args = parser.parse_args()

    logging.basicConfig(
        stream=sys.stderr, level=logging.WARNING, format="%(levelname)s %(name)s %(message)s"
    )
    log = AppendLog(args.log)

    def record(what: str, s: StageExecution) -> None:
        log.write(f"{what}\t{s.workflow_id}\t{s.ref_id}\t{s.idempotency_key}\t{os.getpid()}")

    def step(s: StageExecution) -> TaskResult:
        record("start", s)
        gate = s.context.get("gate")
        if gate and not wait_for_file(Path(gate), poll_s=0.01, limit_s=50):
            raise RuntimeError(f"gate {gate} never opened")
        record("end", s)
        return TaskResult.success(outputs={s.ref_id: s.idempotency_key})

    configure_event_sourcing(PostgresEventStore(args.url))
    drain_postgres(
        args.url,
        registry_of(step),
        QueueProcessorConfig(
            poll_frequency_ms=20, max_workers=4, retry_delay=timedelta(milliseconds=200)
        ),
        lease_s=args.lease,
        timeout=args.timeout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
