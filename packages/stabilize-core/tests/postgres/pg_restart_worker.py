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
import time
from datetime import timedelta
from pathlib import Path

from stabilize import (
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    QueueProcessorConfig,
    StageExecution,
    TaskRegistry,
    TaskResult,
)
from stabilize.events import PostgresEventStore, configure_event_sourcing


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
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(what: str, s: StageExecution) -> None:
        line = f"{what}\t{s.workflow_id}\t{s.ref_id}\t{s.idempotency_key}\t{os.getpid()}\n"
        os.write(fd, line.encode())
        os.fsync(fd)

    def step(s: StageExecution) -> TaskResult:
        record("start", s)
        gate = s.context.get("gate")
        if gate:
            deadline = time.monotonic() + 50
            while not Path(gate).exists():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"gate {gate} never opened")
                time.sleep(0.01)
        record("end", s)
        return TaskResult.success(outputs={s.ref_id: s.idempotency_key})

    registry = TaskRegistry()
    registry.register("step", step)
    configure_event_sourcing(PostgresEventStore(args.url))
    store = PostgresWorkflowStore(args.url)
    queue = PostgresQueue(args.url, lock_duration=timedelta(seconds=args.lease))
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(
            poll_frequency_ms=20, max_workers=4, retry_delay=timedelta(milliseconds=200)
        ),
    )
    processor.process_all(timeout=args.timeout)
    store.backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
