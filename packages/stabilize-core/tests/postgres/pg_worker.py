"""A stabilize worker process on PostgreSQL for the multi-process tests (a script, not a test).

Usage::

    python pg_worker.py URL SCHEMA LOG [--lease SECONDS] [--timeout SECONDS] [--block FILE]

Runs ``QueueProcessor.process_all()`` until the queue is empty, then exits 0 (3 if the
processor logged an error). Every task execution appends one line
``<workflow id>\\t<stage ref>\\t<pass>\\t<pid>`` to LOG (one ``write`` on an ``O_APPEND``
descriptor, then ``fsync``), so the parent can count executions across processes. With
``--block FILE``, a task waits (at most 60 s) until FILE exists before it returns, so the
parent can kill a worker while it runs one.

Task types: ``step`` logs and succeeds (publishing its pass number); ``loop`` logs and
jumps back to the stage named by the stage's ``loop_to`` until ``passes`` passes ran.
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


class ErrorCounter(logging.Handler):
    """Counts ERROR records of the engine's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("log")
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--block", default=None)
    args = parser.parse_args()

    errors = ErrorCounter()
    logging.getLogger("stabilize").addHandler(errors)
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    block = Path(args.block) if args.block else None

    def record(s: StageExecution) -> None:
        line = f"{s.workflow_id}\t{s.ref_id}\t{s.context.get('pass', 1)}\t{os.getpid()}\n"
        os.write(fd, line.encode())
        os.fsync(fd)
        if block is not None:
            deadline = time.monotonic() + 60
            while not block.exists() and time.monotonic() < deadline:
                time.sleep(0.01)

    def step(s: StageExecution) -> TaskResult:
        record(s)
        return TaskResult.success(outputs={s.ref_id: True, "pass": s.context.get("pass", 1)})

    def loop(s: StageExecution) -> TaskResult:
        record(s)
        current = int(s.context.get("pass", 1))
        if current < int(s.context["passes"]):
            return TaskResult.jump_to(s.context["loop_to"], context={"pass": current + 1})
        return TaskResult.success(outputs={"passes": current})

    registry = TaskRegistry()
    registry.register("step", step)
    registry.register("loop", loop)
    store = PostgresWorkflowStore(args.url, schema=args.schema)
    queue = PostgresQueue(args.url, schema=args.schema, lock_duration=timedelta(seconds=args.lease))
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(poll_frequency_ms=20, max_workers=4),
    )
    processor.process_all(timeout=args.timeout)
    store.backend.close()
    return 3 if errors.count else 0


if __name__ == "__main__":
    sys.exit(main())
