"""Fixtures of the integration tests: a real engine on a fresh SQLite file per test."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest

from stabilize import (
    Orchestrator,
    QueueProcessor,
    SqliteQueue,
    SqliteWorkflowStore,
    TaskRegistry,
    Workflow,
)
from stabilize.backends.sqlite import SqliteBackend, sqlite_path
from stabilize.events import disable_event_sourcing
from stabilize.queue.processor.config import QueueProcessorConfig

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
    """Everything the spec's example builds, for one database file."""

    url: str
    store: SqliteWorkflowStore
    queue: SqliteQueue
    registry: TaskRegistry
    processor: QueueProcessor
    orchestrator: Orchestrator
    extra: list[QueueProcessor] = field(default_factory=list)

    @property
    def path(self) -> str:
        return sqlite_path(self.url)

    @property
    def backend(self) -> SqliteBackend:
        backend = self.store.backend
        assert isinstance(backend, SqliteBackend)
        return backend

    def run(self, workflow: Workflow, timeout: float = HANG_GUARD) -> Workflow:
        """Store, start and run a workflow to the end; return its stored state."""
        self.store.store(workflow)
        self.orchestrator.start(workflow)
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(workflow.id)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the file through a connection of its own (not the engine's)."""
        with contextlib.closing(sqlite3.connect(self.path, timeout=30)) as conn:
            return list(conn.execute(sql, params).fetchall())

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        return int(self.query(f"SELECT count(*) FROM {table}")[0][0])

    def counts(self) -> dict[str, int]:
        """Rows in each engine table."""
        return {t: self.count(t) for t in ("workflows", "stages", "queue_messages")}


class MakeEngine(Protocol):
    """The ``make_engine`` fixture."""

    def __call__(
        self,
        url: str | None = None,
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
    """A fresh SQLite file for this test."""
    return f"sqlite:///{tmp_path / 'wf.db'}"


@pytest.fixture(autouse=True)
def reset_event_sourcing() -> Iterator[None]:
    """Never let one test's event recording leak into the next."""
    disable_event_sourcing()
    yield
    disable_event_sourcing()


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
def make_engine(db_url: str) -> Iterator[MakeEngine]:
    """Build store, queue, registry, processor and orchestrator for a URL and a config."""
    made: list[Engine] = []

    def make(
        url: str | None = None,
        config: QueueProcessorConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        clock: Callable[[], float] | None = None,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> Engine:
        url = url or db_url
        store = SqliteWorkflowStore(url, create_tables=True)
        queue = SqliteQueue(url, lock_duration=lock_duration, max_attempts=max_attempts)
        queue._create_table()
        registry = registry if registry is not None else TaskRegistry()
        config = config or QueueProcessorConfig(poll_frequency_ms=10)
        kwargs: dict[str, Any] = {} if clock is None else {"clock": clock}
        processor = QueueProcessor(
            queue, store=store, task_registry=registry, config=config, **kwargs
        )
        orchestrator = Orchestrator(queue, store=store, **kwargs)
        engine = Engine(url, store, queue, registry, processor, orchestrator)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        for processor in [engine.processor, *engine.extra]:
            processor.stop(wait=True, timeout=10)
