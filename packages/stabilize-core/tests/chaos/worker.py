"""A stabilize worker process for the crash and multi-process tests (a script, not a test).

Usage::

    python worker.py DB_URL {drain,serve} --log FILE --release FILE [options]

``drain`` runs ``QueueProcessor.process_all()`` once and exits; ``serve`` runs
``QueueProcessor.start()`` until the ``--stop`` file appears, then stops gracefully.

Every task execution appends one line ``<stage ref>\\t<idempotency key>\\t<pid>\\t<pass>`` to
the ``--log`` file at its start (one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``),
so the parent can count executions across processes, including ones killed mid-task.

Task types:
    step: log and succeed.
    block: log, then wait (polling every 10 ms, at most 60 s) for the ``--release`` file.
    loop_start: log with the pass number in its context (1 when absent) and publish it.
    loop_end: log; jump back to the stage named by ``loop_to`` until ``passes`` passes ran.

The process exits 0 when the processor logged no error, 3 otherwise (errors go to stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from stabilize import (
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskRegistry,
    TaskResult,
)
from stabilize.backends.sqlite import SqliteBackend
from stabilize.events import SqliteEventStore, configure_event_sourcing

BLOCK_LIMIT_S = 60.0
POLL_S = 0.01


class ErrorCounter(logging.Handler):
    """Counts ERROR records of the engine's loggers (a failed processor step, say)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


class ExecutionLog:
    """Appends one line per task execution, durably, shared by several processes."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def record(self, stage: StageExecution, pass_no: int) -> None:
        line = f"{stage.ref_id}\t{stage.idempotency_key}\t{os.getpid()}\t{pass_no}\n"
        os.write(self.fd, line.encode())  # one write: lines of processes never interleave
        os.fsync(self.fd)


def build_registry(log: ExecutionLog, release: Path) -> TaskRegistry:
    def step(stage: StageExecution) -> TaskResult:
        log.record(stage, int(stage.context.get("pass", 1)))
        return TaskResult.success(outputs={f"{stage.ref_id}_pid": os.getpid()})

    def block(stage: StageExecution) -> TaskResult:
        log.record(stage, int(stage.context.get("pass", 1)))
        deadline = time.monotonic() + BLOCK_LIMIT_S
        while not release.exists():
            if time.monotonic() > deadline:
                return TaskResult.terminal(f"{release} did not appear within {BLOCK_LIMIT_S}s")
            time.sleep(POLL_S)
        return TaskResult.success(outputs={f"{stage.ref_id}_pid": os.getpid()})

    def loop_start(stage: StageExecution) -> TaskResult:
        pass_no = int(stage.context.get("pass", 1))
        log.record(stage, pass_no)
        return TaskResult.success(outputs={"pass": pass_no})

    def loop_end(stage: StageExecution) -> TaskResult:
        pass_no = int(stage.context.get("pass", 1))
        log.record(stage, pass_no)
        if pass_no < int(stage.context["passes"]):
            return TaskResult.jump_to(str(stage.context["loop_to"]), context={"pass": pass_no + 1})
        return TaskResult.success(outputs={"passes_done": pass_no})

    registry = TaskRegistry()
    for fn in (step, block, loop_start, loop_end):
        registry.register(fn.__name__, fn)
    return registry


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("mode", choices=["drain", "serve"])
    p.add_argument("--log", required=True, help="the execution log to append to")
    p.add_argument("--release", required=True, help="the file that unblocks 'block' tasks")
    p.add_argument("--ready", help="a file to create once the processor runs")
    p.add_argument("--stop", help="serve mode: stop when this file appears")
    p.add_argument("--lease", type=float, default=None, help="lease_duration_seconds")
    p.add_argument("--recover", action="store_true", help="recover_on_start=True")
    p.add_argument("--events", action="store_true", help="record events in the same file")
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=50.0, help="drain mode: process_all timeout")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"
    errors = ErrorCounter()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("stabilize").addHandler(errors)

    if args.events:
        configure_event_sourcing(SqliteEventStore(args.db_url, create_tables=True))
    store = SqliteWorkflowStore(args.db_url)
    queue = SqliteQueue(args.db_url)
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=build_registry(ExecutionLog(args.log), Path(args.release)),
        config=QueueProcessorConfig(
            poll_frequency_ms=20,
            max_workers=args.max_workers,
            lease_duration_seconds=args.lease,
            recover_on_start=args.recover,
        ),
    )
    assert isinstance(store.backend, SqliteBackend)
    assert store.backend.journal_mode == "WAL", store.backend.journal_mode
    print(f"worker {os.getpid()} owner {processor.owner}", file=sys.stderr, flush=True)

    if args.mode == "drain":
        if args.ready:
            Path(args.ready).touch()
        processed = processor.process_all(timeout=args.timeout)
        print(f"processed {processed}", flush=True)
    else:
        if not args.stop:
            raise SystemExit("serve mode needs --stop")
        stop = Path(args.stop)
        processor.start()
        if args.ready:
            Path(args.ready).touch()
        while not stop.exists():
            time.sleep(POLL_S)
        still = processor.stop(timeout=30)
        print(f"stopped with {still} task(s) running", flush=True)
    return 0 if errors.count == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
