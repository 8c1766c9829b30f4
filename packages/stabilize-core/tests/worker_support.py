"""What the worker scripts that tests start as subprocesses share (not a test).

The workers (``chaos/worker.py``, ``integration/flow_worker.py``,
``integration/mutex_worker.py``, ``postgres/pg_worker.py``,
``postgres/pg_restart_worker.py``) run as ``python path/to/worker.py ...``, so each puts
this directory on ``sys.path`` before importing this module.

They count the engine's logged errors to choose their exit code, append lines to files
that several processes share, wait for files the parent creates, and run a
``QueueProcessor`` on a WAL SQLite file until a stop file appears or drain a PostgreSQL
queue once.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from stabilize import (
    PostgresQueue,
    PostgresWorkflowStore,
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

TaskFn = Callable[[StageExecution], TaskResult]
"""A task as a plain function of its stage."""


class ErrorCounter(logging.Handler):
    """Counts ERROR records of the engine's loggers (a failed processor step, say)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Count the record; it is not printed."""
        self.count += 1

    @property
    def exit_code(self) -> int:
        """0 when the engine logged no error, 3 otherwise."""
        return 0 if self.count == 0 else 3


def count_errors() -> ErrorCounter:
    """Attach a new :class:`ErrorCounter` to the ``stabilize`` logger and return it."""
    errors = ErrorCounter()
    logging.getLogger("stabilize").addHandler(errors)
    return errors


def log_to_stderr(fmt: str = logging.BASIC_FORMAT) -> ErrorCounter:
    """Log INFO and above to stderr in ``fmt`` and count the engine's errors.

    Returns:
        The counter attached to the ``stabilize`` logger.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format=fmt)
    return count_errors()


class AppendLog:
    """A file that several processes append whole lines to, durably.

    Each line is one ``write`` on an ``O_APPEND`` descriptor followed by ``fsync``, so
    lines of processes never interleave and a line written before a SIGKILL stays.
    """

    def __init__(self, path: str | Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, line: str) -> None:
        """Append ``line`` and a newline."""
        os.write(self.fd, f"{line}\n".encode())  # one write: lines of processes never interleave
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the descriptor."""
        os.close(self.fd)


def append(path: str | Path, line: str) -> None:
    """Append one line to ``path`` as :class:`AppendLog` does, opening the file for it."""
    log = AppendLog(path)
    try:
        log.write(line)
    finally:
        log.close()


def wait_for_file(path: Path, *, poll_s: float, limit_s: float | None = None) -> bool:
    """Poll every ``poll_s`` seconds until ``path`` exists.

    Args:
        path: The file to wait for.
        poll_s: Seconds between checks.
        limit_s: Give up after this many seconds (``None``: wait for ever).

    Returns:
        True once the file exists, False when ``limit_s`` ran out first.
    """
    deadline = None if limit_s is None else time.monotonic() + limit_s
    while not path.exists():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(poll_s)
    return True


def registry_of(*tasks: TaskFn) -> TaskRegistry:
    """A registry with each task function registered under its own ``__name__``."""
    registry = TaskRegistry()
    for fn in tasks:
        registry.register(fn.__name__, fn)
    return registry


def sqlite_processor(
    db_url: str,
    registry: TaskRegistry,
    config: QueueProcessorConfig,
    *,
    events: bool = False,
) -> QueueProcessor:
    """A processor on a SQLite file in WAL mode, which processes need to share it.

    Args:
        db_url: ``sqlite:///path``.
        registry: The tasks the processor runs.
        config: The processor's settings.
        events: Record events in the same file.

    Returns:
        The processor, not started.
    """
    os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = "WAL"  # before anything opens the file
    if events:
        configure_event_sourcing(SqliteEventStore(db_url, create_tables=True))
    store = SqliteWorkflowStore(db_url)
    queue = SqliteQueue(db_url)
    processor = QueueProcessor(queue, store=store, task_registry=registry, config=config)
    assert isinstance(store.backend, SqliteBackend)
    assert store.backend.journal_mode == "WAL", store.backend.journal_mode
    return processor


def serve_until(
    processor: QueueProcessor, stop: Path, *, poll_s: float, ready: Path | None = None
) -> None:
    """Run ``processor`` in the background until ``stop`` appears, then stop it gracefully.

    Prints ``stopped with N task(s) running`` to stdout at the end.

    Args:
        processor: A processor, not started.
        stop: The file whose appearance stops the processor.
        poll_s: Seconds between checks for ``stop``.
        ready: A file to create once the processor runs.
    """
    processor.start()
    if ready is not None:
        ready.touch()
    wait_for_file(stop, poll_s=poll_s)
    still = processor.stop(timeout=30)
    print(f"stopped with {still} task(s) running", flush=True)


def serve_sqlite(
    db_url: str,
    registry: TaskRegistry,
    stop: Path,
    *,
    max_workers: int,
    poll_s: float,
    poll_ms: int = 10,
) -> int:
    """Serve a WAL SQLite file until ``stop`` appears, logging to stderr.

    Args:
        db_url: ``sqlite:///path``.
        registry: The tasks the processor runs.
        stop: The file whose appearance stops the processor.
        max_workers: The processor's worker threads.
        poll_s: Seconds between checks for ``stop``.
        poll_ms: The processor's ``poll_frequency_ms``.

    Returns:
        The exit code: 0 when the engine logged no error, 3 otherwise.
    """
    errors = log_to_stderr()
    config = QueueProcessorConfig(poll_frequency_ms=poll_ms, max_workers=max_workers)
    serve_until(sqlite_processor(db_url, registry, config), stop, poll_s=poll_s)
    return errors.exit_code


def drain_postgres(
    url: str,
    registry: TaskRegistry,
    config: QueueProcessorConfig,
    *,
    lease_s: float,
    timeout: float,
    schema: str | None = None,
) -> None:
    """Run ``process_all()`` once on a PostgreSQL queue, then close the connection pool.

    Args:
        url: ``postgresql://...``.
        registry: The tasks the processor runs.
        config: The processor's settings.
        lease_s: How long a claimed message stays reserved for this process.
        timeout: ``process_all``'s timeout in seconds.
        schema: The schema of store and queue (``None``: the connection's default).
    """
    store = PostgresWorkflowStore(url, schema=schema)
    queue = PostgresQueue(url, schema=schema, lock_duration=timedelta(seconds=lease_s))
    processor = QueueProcessor(queue, store=store, task_registry=registry, config=config)
    processor.process_all(timeout=timeout)
    store.backend.close()
