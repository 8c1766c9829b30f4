"""A worker process for the multi-process join races of test_control_flow.py (not a test).

Usage::

    python flow_worker.py DB_URL --started FILE --release FILE --joins FILE --stop FILE

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

WAIT_LIMIT_S = 30.0
POLL_S = 0.005


class ErrorCounter(logging.Handler):
    """Counts ERROR records of the engine's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def build_registry(started: str, release: Path, joins: str) -> TaskRegistry:
    def root(stage: StageExecution) -> TaskResult:
        return TaskResult.success()

    def branch(stage: StageExecution) -> TaskResult:
        append(started, f"{stage.workflow_id}\t{stage.ref_id}")
        deadline = time.monotonic() + WAIT_LIMIT_S
        while not release.exists():
            if time.monotonic() > deadline:
                return TaskResult.terminal(f"{release} did not appear within {WAIT_LIMIT_S}s")
            time.sleep(POLL_S)
        return TaskResult.success(outputs={"winner": stage.ref_id})

    def join(stage: StageExecution) -> TaskResult:
        append(joins, f"{stage.workflow_id}\t{os.getpid()}")
        return TaskResult.success()

    registry = TaskRegistry()
    for fn in (root, branch, join):
        registry.register(fn.__name__, fn)
    return registry


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("db_url")
    p.add_argument("--started", required=True)
    p.add_argument("--release", required=True)
    p.add_argument("--joins", required=True)
    p.add_argument("--stop", required=True)
    p.add_argument("--max-workers", type=int, default=16)
    args = p.parse_args(argv)

    os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"
    errors = ErrorCounter()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    logging.getLogger("stabilize").addHandler(errors)

    store = SqliteWorkflowStore(args.db_url)
    queue = SqliteQueue(args.db_url)
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=build_registry(args.started, Path(args.release), args.joins),
        config=QueueProcessorConfig(poll_frequency_ms=10, max_workers=args.max_workers),
    )
    assert isinstance(store.backend, SqliteBackend)
    assert store.backend.journal_mode == "WAL", store.backend.journal_mode
    stop = Path(args.stop)
    processor.start()
    while not stop.exists():
        time.sleep(POLL_S)
    still = processor.stop(timeout=30)
    print(f"stopped with {still} task(s) running", flush=True)
    return 0 if errors.count == 0 else 3


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
