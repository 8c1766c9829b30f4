"""Benchmark workloads: graphs of no-op stages run by ``QueueProcessor.process_all``.

Each workload runs on a fresh database: a SQLite file in a temporary directory, or a fresh
PostgreSQL schema (created for the run and dropped after it). The measured region is
``store.store`` + ``orchestrator.start`` for every workflow, then one ``process_all``. The
workflows are built before the clock starts and checked after it stops.

``workers_200`` is measured differently (see :func:`submit_workers_200` and ``run.py``):
200 small workflows are submitted first, then N worker processes drain them.
"""

from __future__ import annotations

import os
import resource
import secrets
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stabilize.backends._base import Backend, Transaction
from stabilize.backends.sqlite import SqliteBackend
from stabilize.events import configure_event_sourcing, disable_event_sourcing
from stabilize.models import StageExecution, TaskExecution, Workflow, WorkflowStatus
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


class StageRunCounter:
    """Counts task executions (one task per stage, so one per stage run, loops included)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def bump(self) -> None:
        with self._lock:
            self.value += 1


RUNS = StageRunCounter()


@dataclass(frozen=True)
class Workload:
    """A named benchmark: how to build its workflows and how many stage runs to expect."""

    name: str
    description: str
    build: Callable[[], list[Workflow]]
    expected_runs: int
    width: int | None = None  # fan-out width, for the cost-per-stage-vs-width series


# -- tasks ----------------------------------------------------------------------------


def _noop(stage: StageExecution) -> TaskResult:
    RUNS.bump()
    return TaskResult.success()


def _loop_head(stage: StageExecution) -> TaskResult:
    """Stage ``a`` of the loop: publish which pass this is (1 unless a jump set it)."""
    RUNS.bump()
    return TaskResult.success(outputs={"pass": int(stage.context.get("pass", 1))})


LOOP_PASSES = 3


def _loop_tail(stage: StageExecution) -> TaskResult:
    """Stage ``c`` of the loop: jump back to ``a`` until the pass counter reaches 3."""
    RUNS.bump()
    current = int(stage.context["pass"])
    if current < LOOP_PASSES:
        return TaskResult.jump_to("a", context={"pass": current + 1})
    return TaskResult.success()


TASKS: dict[str, Callable[[StageExecution], TaskResult]] = {
    "bench_noop": _noop,
    "bench_loop_head": _loop_head,
    "bench_loop_tail": _loop_tail,
}


# -- graphs ---------------------------------------------------------------------------


def _stage(ref: str, requires: set[str] | None = None, task: str = "bench_noop") -> StageExecution:
    return StageExecution(
        ref_id=ref,
        type=task,
        name=ref,
        requisite_stage_ref_ids=requires or set(),
        tasks=[TaskExecution.create(ref, task, stage_start=True, stage_end=True)],
    )


def _workflow(name: str, stages: list[StageExecution]) -> Workflow:
    return Workflow.create(application="bench", name=name, stages=stages)


def linear(length: int) -> Workflow:
    """A chain s0 -> s1 -> ... of ``length`` stages."""
    stages = [_stage("s0")]
    stages += [_stage(f"s{i}", {f"s{i - 1}"}) for i in range(1, length)]
    return _workflow(f"linear-{length}", stages)


def fan_out(width: int) -> Workflow:
    """``root`` -> ``width`` parallel stages -> ``join``."""
    branches = [f"b{i}" for i in range(width)]
    stages = [_stage("root")]
    stages += [_stage(ref, {"root"}) for ref in branches]
    stages.append(_stage("join", set(branches)))
    return _workflow(f"fanout-{width}", stages)


def independent(count: int) -> Workflow:
    """One workflow of ``count`` stages with no requisites (all ready at once)."""
    return _workflow(f"independent-{count}", [_stage(f"s{i}") for i in range(count)])


def jump_loop() -> Workflow:
    """a -> b -> c, where c jumps back to a until the pass counter reaches 3."""
    stages = [
        _stage("a", task="bench_loop_head"),
        _stage("b", {"a"}),
        _stage("c", {"b"}, task="bench_loop_tail"),
    ]
    return _workflow("jump-loop", stages)


def _fan_out_workload(width: int, description: str) -> Workload:
    return Workload(
        f"fanout_{width}",
        description,
        lambda: [fan_out(width)],
        width + 2,
        width=width,
    )


WORKLOADS: list[Workload] = [
    Workload(
        "linear_100",
        "1 workflow: a chain of 100 stages",
        lambda: [linear(100)],
        100,
    ),
    _fan_out_workload(200, "1 workflow: root -> 200 parallel stages -> join"),
    Workload(
        "independent_50x5",
        "50 workflows, each a chain of 5 stages",
        lambda: [linear(5) for _ in range(50)],
        50 * 5,
    ),
    Workload(
        "jump_loop_20x3",
        "20 workflows a -> b -> c, c jumps back to a until 3 passes (9 stage runs each)",
        lambda: [jump_loop() for _ in range(20)],
        20 * 3 * LOOP_PASSES,
    ),
    _fan_out_workload(100, "width series: root -> 100 parallel stages -> join"),
    _fan_out_workload(400, "width series: root -> 400 parallel stages -> join"),
]

# Wide single workflows (issue 13): run with --only, not by default (they take a while).
EXTRA_WORKLOADS: list[Workload] = [
    _fan_out_workload(10_000, "wide: root -> 10,000 parallel stages -> join"),
    Workload(
        "independent_10000",
        "wide: 1 workflow of 10,000 stages without requisites",
        lambda: [independent(10_000)],
        10_000,
    ),
    Workload(
        "independent_200",
        "wide, for scale: 1 workflow of 200 stages without requisites",
        lambda: [independent(200)],
        200,
    ),
    _fan_out_workload(4_000, "wide: root -> 4,000 parallel stages -> join"),
    Workload(
        "independent_4000",
        "wide: 1 workflow of 4,000 stages without requisites",
        lambda: [independent(4_000)],
        4_000,
    ),
]

BY_NAME = {w.name: w for w in [*WORKLOADS, *EXTRA_WORKLOADS]}

# The multi-process throughput workload: 200 small workflows of 5 single-task stages each,
# half chains (s0 -> ... -> s4), half small fan-outs (root -> 3 parallel stages -> join).
WORKERS_WORKLOAD = "workers_200"
WORKERS_WORKFLOWS = 200
WORKERS_STAGES_PER_WORKFLOW = 5


def workers_200() -> list[Workflow]:
    """The 200 workflows of ``workers_200`` (chains and fan-outs alternate)."""
    return [linear(5) if i % 2 == 0 else fan_out(3) for i in range(WORKERS_WORKFLOWS)]


# -- measurement ----------------------------------------------------------------------

DEFAULT_PG_URL = "postgresql://root@127.0.0.1:5432/test"
PG_URL_ENV = "STABILIZE_BENCH_PG_URL"


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
    """

    def __init__(self, backend: Backend) -> None:
        self.commits = 0
        self.reads = 0
        self.rollbacks = 0
        write, read = backend.transaction, backend.read

        @contextmanager
        def counted_write() -> Iterator[Transaction]:
            try:
                with write() as tx:
                    yield tx
            except BaseException:
                self.rollbacks += 1
                raise
            self.commits += 1

        @contextmanager
        def counted_read() -> Iterator[Transaction]:
            with read() as tx:
                yield tx
            self.reads += 1

        backend.transaction = counted_write  # type: ignore[method-assign]
        backend.read = counted_read  # type: ignore[method-assign]

    def reset(self) -> None:
        self.commits = self.reads = self.rollbacks = 0


def current_rss_kib() -> int:
    """Resident set size now, from /proc (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Setup:
    """A database with a store, queue, orchestrator and processor on it."""

    store: WorkflowStore
    queue: Queue
    orchestrator: Orchestrator
    processor: QueueProcessor
    counter: TransactionCounter


def make_setup(db: Database, poll_ms: int = POLL_FREQUENCY_MS) -> Setup:
    """Open ``db`` (creating its tables) and wire the engine to it."""
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
    for name, fn in TASKS.items():
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


def run_once(workload: Workload, target: Target) -> dict[str, Any]:
    """Run ``workload`` once on a fresh database; return its figures (RSS not included)."""
    with fresh_database(target) as db:
        setup = make_setup(db)
        backend = setup.store.backend
        workflows = workload.build()
        rss_before = current_rss_kib()
        RUNS.value = 0
        setup.counter.reset()
        started = time.perf_counter()
        cpu_before = time.process_time()
        for wf in workflows:
            setup.store.store(wf)
            setup.orchestrator.start(wf)
        processed = setup.processor.process_all(timeout=PROCESS_ALL_TIMEOUT_S)
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        commits, reads, rollbacks = (
            setup.counter.commits,
            setup.counter.reads,
            setup.counter.rollbacks,
        )
        runs = RUNS.value
        statuses = [setup.store.retrieve(wf.id).status for wf in workflows]
        failed = [s.value for s in statuses if s is not WorkflowStatus.SUCCEEDED]
        if failed:
            raise RuntimeError(f"{workload.name}: {len(failed)} workflow(s) ended {failed[:3]}")
        if runs != workload.expected_runs:
            raise RuntimeError(
                f"{workload.name}: {runs} stage runs, expected {workload.expected_runs}"
            )
        result = {
            "workload": workload.name,
            "workflows": len(workflows),
            "stages_executed": runs,
            "messages_processed": processed,
            "wall_s": wall,
            "stages_per_s": runs / wall,
            "us_per_stage": 1e6 * wall / runs,
            "cpu_us_per_stage": 1e6 * cpu / runs,
            "commits": commits,
            "processor_commits": setup.processor.commits,
            "reads": reads,
            "rollbacks": rollbacks,
            "commits_per_stage": commits / runs,
            "rss_before_kib": rss_before,
            **database_info(backend),
        }
        backend.close()
    return result


# -- workers_200: several worker processes ---------------------------------------------


def submit_workers_200(setup: Setup) -> list[str]:
    """Store and start the 200 workflows of ``workers_200``; return their ids."""
    ids = []
    for wf in workers_200():
        setup.store.store(wf)
        setup.orchestrator.start(wf)
        ids.append(wf.id)
    return ids


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


def count_succeeded(backend: Backend) -> tuple[int, int | None]:
    """(workflows SUCCEEDED, the latest ``updated_at`` among them in epoch ms)."""
    with backend.read() as tx:
        tx.cur.execute("SELECT count(*), max(updated_at) FROM workflows WHERE status = 'SUCCEEDED'")
        count, last = tx.cur.fetchone()
    return int(count), last


def worker_drain(db: Database, poll_ms: int) -> dict[str, Any]:
    """Body of one worker process: open the database, say ready, wait for ``go``, drain.

    Prints ``ready`` once the engine is open, reads one line from stdin (the start signal)
    and runs ``process_all`` until the queue is empty and nothing runs. ``poll_ms`` is the
    processor's ``poll_frequency_ms``: how long an idle worker waits before it looks again
    (on PostgreSQL a NOTIFY of new work ends the wait early).
    """
    import sys

    setup = make_setup(db, poll_ms)
    rss_before = current_rss_kib()
    RUNS.value = 0
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = before.ru_utime + before.ru_stime
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.time()
    processed = setup.processor.process_all(timeout=PROCESS_ALL_TIMEOUT_S)
    finished = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "pid": os.getpid(),
        "stages_executed": RUNS.value,
        "messages_processed": processed,
        "processor_commits": setup.processor.commits,
        "commits": setup.counter.commits,
        "rollbacks": setup.counter.rollbacks,
        "reads": setup.counter.reads,
        "started": started,
        "finished": finished,
        "rss_before_kib": rss_before,
        "cpu_s": usage.ru_utime + usage.ru_stime - cpu_before,
    }
    setup.store.backend.close()
    return result
