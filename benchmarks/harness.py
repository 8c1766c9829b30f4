"""The measuring harness: fresh databases, the engine wired to them, and the counters.

Every run gets a fresh database: a SQLite file in a temporary directory, or a fresh
PostgreSQL schema (created for the run and dropped after it). :func:`make_setup` opens it
with a store, a queue, an orchestrator and one processor, and wraps the backend's
``transaction()`` to count (and time) every commit.
"""

from __future__ import annotations

import os
import resource
import secrets
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from stabilize.backends._base import Backend, Transaction
from stabilize.backends.sqlite import SqliteBackend
from stabilize.events import configure_event_sourcing, disable_event_sourcing
from stabilize.models import StageExecution, WorkflowStatus
from stabilize.orchestrator import Orchestrator
from stabilize.persistence.store import (
    PostgresWorkflowStore,
    SqliteWorkflowStore,
    WorkflowStore,
)
from stabilize.queue.processor import QueueProcessor, QueueProcessorConfig
from stabilize.queue.queue import PostgresQueue, Queue, SqliteQueue
from stabilize.tasks.registry import TaskRegistry
from stabilize.tasks.result import TaskResult

# Small so that an idle process_all re-checks the queue quickly; while tasks run the
# processor blocks on the runner's result queue and wakes as soon as a task finishes.
POLL_FREQUENCY_MS = 1
PROCESS_ALL_TIMEOUT_S = 600.0

TaskFunction = Callable[[StageExecution], TaskResult]


class WorkloadSkipped(Exception):
    """The engine under test cannot run this workload (the message says why)."""


class StageRunCounter:
    """Counts task executions (one task per stage, so one per stage run, loops included).

    :meth:`wait_for` lets a thread sleep until the count reaches a number (service mode
    waits for the last task this way instead of polling the database).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._target: int | None = None
        self.value = 0

    def bump(self) -> None:
        with self._cond:
            self.value += 1
            if self._target is not None and self.value >= self._target:
                self._cond.notify_all()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until ``count`` executions were counted; False if ``timeout`` passed first."""
        with self._cond:
            self._target = count
            try:
                return self._cond.wait_for(lambda: self.value >= count, timeout)
            finally:
                self._target = None


RUNS = StageRunCounter()

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
PG_URL_ENV = "STABILIZE_BENCH_PG_URL"


def env_with_engine(pythonpath: str) -> dict[str, str]:
    """This process's environment with another checkout's engine first on ``PYTHONPATH``.

    Raises:
        ValueError: ``pythonpath`` holds no ``stabilize`` package. Without this check a
            wrong path would leave both sides of a comparison running this tree's engine.
    """
    if not Path(pythonpath, "stabilize").is_dir():
        raise ValueError(
            f"{pythonpath}: no stabilize package there (give the other checkout's "
            "packages/stabilize-core/src)"
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    return env


def default_pg_url() -> str:
    """The PostgreSQL server of the benchmarks: ``$STABILIZE_BENCH_PG_URL`` or the local one."""
    return os.environ.get(PG_URL_ENV) or DEFAULT_PG_URL


@dataclass(frozen=True)
class Target:
    """Where a run's database lives: a backend kind and its settings."""

    backend: str = "sqlite"  # "sqlite" or "postgres"
    journal: str = "WAL"  # SQLite only
    pg_url: str = DEFAULT_PG_URL  # PostgreSQL only
    events: str = "on"  # "on": record every transition in the engine's database; "off": don't


@dataclass(frozen=True)
class Database:
    """One fresh database of a run: a SQLite file or a PostgreSQL schema."""

    target: Target
    location: str  # the SQLite file path, or the PostgreSQL schema name

    def as_args(self) -> list[str]:
        """Command-line arguments that let a worker process open this database."""
        return [
            "--backend",
            self.target.backend,
            "--journal",
            self.target.journal,
            "--pg-url",
            self.target.pg_url,
            "--events",
            self.target.events,
            "--db",
            self.location,
        ]


@contextmanager
def fresh_database(target: Target) -> Iterator[Database]:
    """A new SQLite file in a temporary directory, or a new PostgreSQL schema (dropped after)."""
    if target.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="stabilize-bench-") as tmp:
            yield Database(target, str(Path(tmp) / "bench.db"))
        return
    import psycopg
    from psycopg import sql

    from stabilize.backends.postgres import PostgresBackend

    schema = f"bench_{secrets.token_hex(6)}"
    try:
        yield Database(target, schema)
    finally:
        for key, backend in list(PostgresBackend._instances.items()):
            if key[1] == schema:
                backend.close()
        with psycopg.connect(target.pg_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


class TransactionCounter:
    """Counts write transactions committed on a backend by wrapping its ``transaction``.

    Every write to the database goes through ``backend.transaction()`` (store, orchestrator,
    processor steps, heartbeats, recovery), so this counts all commits, not only the
    processor's. Read-only snapshots (``backend.read()``) are counted apart.

    ``last_commit`` is the ``time.perf_counter()`` at the end of the latest commit; after
    :meth:`stamp_commits`, ``commit_times`` holds the end of every commit, in order.
    """

    def __init__(self, backend: Backend) -> None:
        self.commits = 0
        self.reads = 0
        self.rollbacks = 0
        self.last_commit = 0.0
        self.commit_times: list[float] | None = None
        # In service mode the submitting thread and the processor's thread both commit.
        lock = threading.Lock()
        write, read = backend.transaction, backend.read

        @contextmanager
        def counted_write() -> Iterator[Transaction]:
            try:
                with write() as tx:
                    yield tx
            except BaseException:
                with lock:
                    self.rollbacks += 1
                raise
            end = time.perf_counter()
            with lock:
                self.commits += 1
                self.last_commit = end
                if self.commit_times is not None:
                    self.commit_times.append(end)

        @contextmanager
        def counted_read() -> Iterator[Transaction]:
            with read() as tx:
                yield tx
            with lock:
                self.reads += 1

        backend.transaction = counted_write  # type: ignore[method-assign]
        backend.read = counted_read  # type: ignore[method-assign]

    def reset(self) -> None:
        self.commits = self.reads = self.rollbacks = 0

    def stamp_commits(self) -> list[float]:
        """Start recording the end time of every commit; return the list they go to."""
        self.commit_times = []
        return self.commit_times


def _proc_status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (None where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss_kib() -> int:
    """Resident set size now, from /proc (0 where unavailable)."""
    return _proc_status_kib("VmRSS") or 0


def peak_rss_kib() -> int:
    """This program's peak RSS since it started.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` of a process started by fork and exec
    also counts the pages of its parent it held between the two (the parent's RSS at the
    fork), so a worker or child started by a parent that had grown to 60 MB reported at
    least 60 MB whatever it used itself. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on
    macOS).
    """
    hwm = _proc_status_kib("VmHWM")
    if hwm is not None:
        return hwm
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss


@dataclass
class Setup:
    """A database with a store, queue, orchestrator and processor on it."""

    store: WorkflowStore
    queue: Queue
    orchestrator: Orchestrator
    processor: QueueProcessor
    counter: TransactionCounter


def make_setup(
    db: Database, tasks: Mapping[str, TaskFunction], poll_ms: int = POLL_FREQUENCY_MS
) -> Setup:
    """Open ``db`` (creating its tables), register ``tasks`` and wire the engine to it."""
    store: WorkflowStore
    queue: Queue
    if db.target.backend == "sqlite":
        # Read by SqliteBackend when it opens the file, i.e. when the store is created below.
        os.environ["STABILIZE_SQLITE_JOURNAL_MODE"] = db.target.journal
        url = f"sqlite:///{db.location}"
        store = SqliteWorkflowStore(url, create_tables=True)
        sqlite_queue = SqliteQueue(url)
        sqlite_queue._create_table()
        queue = sqlite_queue
    else:
        store = PostgresWorkflowStore(db.target.pg_url, schema=db.location, create_tables=True)
        queue = PostgresQueue(db.target.pg_url, schema=db.location)
    if db.target.events == "on":
        configure_event_sourcing()  # the default: the engine's own database
    else:
        disable_event_sourcing()
    registry = TaskRegistry()
    for name, fn in tasks.items():
        registry.register(name, fn)
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(poll_frequency_ms=poll_ms),
    )
    orchestrator = Orchestrator(queue, store=store)
    return Setup(store, queue, orchestrator, processor, TransactionCounter(store.backend))


def database_info(backend: Backend) -> dict[str, Any]:
    """What the run's database is and how durable its commits are."""
    if isinstance(backend, SqliteBackend):
        return {
            "backend": "sqlite",
            "database": f"SQLite {sqlite3.sqlite_version}",
            "journal_mode": backend.journal_mode,
            "synchronous": backend.synchronous,
            "sqlite_version": sqlite3.sqlite_version,
        }
    with backend.read() as tx:
        tx.cur.execute(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit')"
        )
        version, sync = tx.cur.fetchone()
    return {
        "backend": "postgres",
        "database": f"PostgreSQL {version}",
        "journal_mode": None,
        "synchronous": f"synchronous_commit={sync}",
        "server_version": version,
    }


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (0s elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])
    return (total - idle) / tick, total / tick


LOCAL_HOSTS = frozenset({"", "127.0.0.1", "::1", "localhost"})


def is_local_server(pg_url: str) -> bool:
    """Whether ``pg_url`` names a PostgreSQL server on this machine (its processes are here)."""
    parts = urlsplit(pg_url)
    host = unquote(parts.hostname or "")
    hosts = parse_qs(parts.query).get("host") or [host]  # ?host=/run/postgresql
    return all(h in LOCAL_HOSTS or h.startswith("/") for h in hosts)


def server_cpu(target: Target, proc: Path = Path("/proc")) -> float | None:
    """CPU seconds the local PostgreSQL server's processes have used so far (None: unknown).

    The sum, over processes named ``postgres``, of their user and system time and of the
    time of their children that ended (a backend whose connection closed is counted in
    the postmaster's). Differences of two readings give the server's share of a run; it
    includes whatever else the server did meanwhile (other databases, autovacuum), so
    read it on a machine that runs nothing else. None for SQLite, for a server on another
    machine, and where ``/proc`` cannot be read.
    """
    if target.backend != "postgres" or not is_local_server(target.pg_url):
        return None
    ticks = 0
    try:
        entries = list(proc.iterdir())
    except OSError:
        return None
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            # Fields after the command name (which may hold spaces), from field 3 (state):
            # utime, stime, cutime, cstime are fields 14 to 17.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            ticks += sum(int(x) for x in fields[11:15])
        except (OSError, ValueError, IndexError):
            continue  # ended meanwhile, or not ours to read
    if ticks == 0:
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def count_succeeded(backend: Backend) -> tuple[int, int | None]:
    """(workflows SUCCEEDED, the latest ``updated_at`` among them in epoch ms)."""
    with backend.read() as tx:
        tx.cur.execute("SELECT count(*), max(updated_at) FROM workflows WHERE status = 'SUCCEEDED'")
        count, last = tx.cur.fetchone()
    return int(count), last


def count_finished(backend: Backend) -> tuple[int, int]:
    """(workflows in a final status, of which SUCCEEDED), from one read of the database."""
    with backend.read() as tx:
        tx.cur.execute("SELECT status, count(*) FROM workflows GROUP BY status")
        rows = tx.cur.fetchall()
    finished = succeeded = 0
    for status, count in rows:
        if WorkflowStatus(status).is_complete:
            finished += int(count)
            if status == WorkflowStatus.SUCCEEDED.value:
                succeeded += int(count)
    return finished, succeeded
