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
import os
import sys
from pathlib import Path

from stabilize import QueueProcessorConfig, StageExecution, TaskResult

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/, for worker_support
from worker_support import (
    AppendLog,
    count_errors,
    drain_postgres,
    registry_of,
    wait_for_file,
)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("schema")
    parser.add_argument("log")
    parser.add_argument("--lease", type=float, default=60.0)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--block", default=None)
    args = parser.parse_args()

    errors = count_errors()
    log = AppendLog(args.log)
    block = Path(args.block) if args.block else None

    def record(s: StageExecution) -> None:
        log.write(f"{s.workflow_id}\t{s.ref_id}\t{s.context.get('pass', 1)}\t{os.getpid()}")
        if block is not None:
            wait_for_file(block, poll_s=0.01, limit_s=60)  # on time-out, carry on

    def step(s: StageExecution) -> TaskResult:
        record(s)
        return TaskResult.success(outputs={s.ref_id: True, "pass": s.context.get("pass", 1)})

    def loop(s: StageExecution) -> TaskResult:
        record(s)
        current = int(s.context.get("pass", 1))
        if current < int(s.context["passes"]):
            return TaskResult.jump_to(s.context["loop_to"], context={"pass": current + 1})
        return TaskResult.success(outputs={"passes": current})

    drain_postgres(
        args.url,
        registry_of(step, loop),
        QueueProcessorConfig(poll_frequency_ms=20, max_workers=4),
        lease_s=args.lease,
        timeout=args.timeout,
        schema=args.schema,
    )
    return errors.exit_code


if __name__ == "__main__":
    sys.exit(main())
