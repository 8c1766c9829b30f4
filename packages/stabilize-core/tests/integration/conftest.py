"""Fixtures of the integration tests: a real engine on a fresh database per test.

``make_engine`` builds the engine on the ``backend`` fixture's database (tests/conftest.py):
a fresh SQLite file, and a fresh PostgreSQL schema (``-m "not postgres"`` runs SQLite only;
without ``STABILIZE_TEST_PG_URL`` the PostgreSQL params skip). A test that only makes sense
on SQLite says so with ``@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)``
and a comment giving the reason.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest
from process_support import ProcessTracker

from stabilize import Orchestrator, QueueProcessor, TaskRegistry, Workflow
from stabilize.backends._base import Backend
from stabilize.backends.sqlite import sqlite_path
from stabilize.events import configure_event_sourcing
from stabilize.persistence import WorkflowStore
from stabilize.queue import Queue
from stabilize.queue.processor.config import QueueProcessorConfig

if TYPE_CHECKING:
    from conftest import Database

HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


class FakeClock:
    """A settable clock in epoch seconds, for the processor and the orchestrator."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Engine:
    """Everything the spec's example builds, on one database (SQLite or PostgreSQL)."""

    db: Database
    store: WorkflowStore
    queue: Queue
    registry: TaskRegistry
    processor: QueueProcessor
    orchestrator: Orchestrator
    extra: list[QueueProcessor] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.db.url

    @property
    def is_postgres(self) -> bool:
        return self.db.is_postgres

    @property
    def path(self) -> str:
        """The SQLite file (SQLite only)."""
        assert not self.db.is_postgres, "a PostgreSQL engine has no file"
        return sqlite_path(self.url)

    @property
    def backend(self) -> Backend:
        """The backend the store and the queue share."""
        backend = self.store.backend
        assert backend is self.queue.backend
        return backend

    def run(self, workflow: Workflow, timeout: float = HANG_GUARD) -> Workflow:
        """Store, start and run a workflow to the end; return its stored state."""
        self.store.store(workflow)
        self.orchestrator.start(workflow)
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(workflow.id)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query through the backend (write ``?``: it becomes the
        backend's own placeholder)."""
        backend = self.backend
        with backend.read() as tx:
            if params:
                tx.cur.execute(sql.replace("?", backend.placeholder), params)
            else:
                tx.cur.execute(sql)
            return [tuple(row) for row in tx.cur.fetchall()]

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])

    def counts(self) -> dict[str, int]:
        """Rows in each engine table."""
        return {t: self.count(t) for t in ("workflows", "stages", "queue_messages")}

    def tables(self) -> set[str]:
        """The names of the tables of this database (of the schema on PostgreSQL)."""
        if self.is_postgres:
            sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = ?"
            return {r[0] for r in self.query(sql, (self.db.schema,))}
        return {r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type='table'")}


class MakeEngine(Protocol):
    """The ``make_engine`` fixture."""

    def __call__(
        self,
        db: Database | None = None,
        config: QueueProcessorConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        clock: Callable[[], float] | None = None,
        lock_duration: timedelta = ...,
        max_attempts: int = ...,
    ) -> Engine: ...


def wait_until(condition: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite file for this test (the ``backend`` fixture's file on SQLite)."""
    return f"sqlite:///{tmp_path / 'wf.db'}"


@pytest.fixture(autouse=True)
def reset_event_sourcing() -> Iterator[None]:
    """Never let one test's event recording leak into the next."""
    configure_event_sourcing()
    yield
    configure_event_sourcing()


@pytest.fixture
def gate(make_engine: MakeEngine) -> Iterator[threading.Event]:
    """An event that blocked tasks wait on; set at teardown so no thread lingers.

    It depends on ``make_engine`` so that it is set before processors are stopped.
    """
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def clock() -> FakeClock:
    """A settable clock."""
    return FakeClock()


@pytest.fixture
def poll() -> Callable[..., None]:
    """``poll(condition, what)``: wait for a condition with a hang guard."""
    return wait_until


@pytest.fixture
def make_engine(backend: Database) -> Iterator[MakeEngine]:
    """Build store, queue, registry, processor and orchestrator on a database (by default
    the ``backend`` fixture's: every test using this runs on SQLite and on PostgreSQL)."""
    made: list[Engine] = []

    def make(
        db: Database | None = None,
        config: QueueProcessorConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        clock: Callable[[], float] | None = None,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> Engine:
        db = db or backend
        store = db.store()
        queue = db.queue(lock_duration=lock_duration, max_attempts=max_attempts)
        registry = registry if registry is not None else TaskRegistry()
        config = config or QueueProcessorConfig(poll_frequency_ms=10)
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        processor = QueueProcessor(
            queue, store=store, task_registry=registry, config=config, **kwargs
        )
        orchestrator = Orchestrator(queue, store=store, **kwargs)
        engine = Engine(db, store, queue, registry, processor, orchestrator)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        for processor in [engine.processor, *engine.extra]:
            processor.stop(wait=True, timeout=10)


class Workers(ProcessTracker):
    """Worker processes of a test (in WAL mode); killed and reaped at teardown."""

    def spawn(
        self, script: Path, args: list[str], name: str | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``python script *args``; its output goes to ``<name>.out`` / ``.err``."""
        return self.start(script, args, name).proc

    def wait_until(self, condition: Callable[[], bool], what: str) -> None:
        """Poll ``condition``; fail at once if a worker exits, or after the hang guard."""
        deadline = time.monotonic() + HANG_GUARD
        while not condition():
            if any(s.proc.poll() is not None for s in self.started):
                raise AssertionError(f"a worker exited while waiting for {what}\n{self.errors()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.errors()}")
            time.sleep(0.01)


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    """Worker processes of the test, killed and reaped at teardown."""
    tracker = Workers(tmp_path)
    try:
        yield tracker
    finally:
        tracker.close()
