"""Fixtures of the PostgreSQL tests: a real server, a fresh schema per test.

The server comes from ``STABILIZE_TEST_PG_URL`` (e.g. ``postgresql://root@127.0.0.1:5432/test``);
without it every test here is skipped with a message saying so.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
import pytest

from stabilize import (
    Orchestrator,
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    StageExecution,
    TaskExecution,
    TaskRegistry,
    Workflow,
)
from stabilize.backends.postgres import PoolOptions
from stabilize.events import configure_event_sourcing
from stabilize.persistence import WorkflowStore
from stabilize.queue import Queue

if TYPE_CHECKING:
    from conftest import Database, PgSchemas

HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
    """Poll ``condition`` until it holds; the deadline only guards against hangs."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# ``pg_url`` (skips without STABILIZE_TEST_PG_URL), ``pg_schemas`` and ``backend`` are
# fixtures of tests/conftest.py, shared with the integration tests.


@pytest.fixture
def pg_schema(pg_schemas: PgSchemas) -> str:
    """A fresh, empty schema for this test, dropped with everything in it at teardown."""
    return pg_schemas.create()


@pytest.fixture
def fresh_schema_name(pg_schemas: PgSchemas) -> str:
    """A schema name that does not exist yet (dropped at teardown if a test created it)."""
    return pg_schemas.name()


@pytest.fixture(autouse=True)
def reset_event_sourcing() -> Iterator[None]:
    """Never let one test's event recording leak into the next."""
    configure_event_sourcing()
    yield
    configure_event_sourcing()


class PgQuery(Protocol):
    """The ``pg_query`` fixture."""

    def __call__(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]: ...


@pytest.fixture
def pg_query(pg_url: str, pg_schema: str) -> PgQuery:
    """Run a query on the test schema through a connection of its own (not the engine's)."""

    def query(query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(pg_url, autocommit=True, options=f"-csearch_path={pg_schema}") as c:
            cur = c.execute(query.encode(), params)
            return list(cur.fetchall()) if cur.description else []

    return query


# -- an engine on either backend ------------------------------------------------------


@dataclass
class EngineTarget:
    """Where an engine's database is: a SQLite file, or a PostgreSQL URL and schema."""

    kind: str
    url: str
    schema: str | None = None

    def store(self) -> WorkflowStore:
        """The workflow store of this database."""
        if self.kind == "postgres":
            return PostgresWorkflowStore(self.url, schema=self.schema)
        return SqliteWorkflowStore(self.url, create_tables=True)

    def queue(self, **kwargs: Any) -> Queue:
        """The queue of this database (``lock_duration``, ``max_attempts`` pass through)."""
        if self.kind == "postgres":
            return PostgresQueue(self.url, schema=self.schema, **kwargs)
        return SqliteQueue(self.url, **kwargs)


@pytest.fixture
def engine_url(backend: Database) -> EngineTarget:
    """The same test on a fresh SQLite file and on a fresh PostgreSQL schema."""
    return EngineTarget(backend.kind, backend.url, backend.schema)


@dataclass
class Engine:
    """Store, queue, registry, processor and orchestrator on one database."""

    target: EngineTarget
    store: WorkflowStore
    queue: Queue
    registry: TaskRegistry
    processor: QueueProcessor
    orchestrator: Orchestrator
    extra: list[QueueProcessor] = field(default_factory=list)

    def run(self, workflow: Workflow, timeout: float = HANG_GUARD) -> Workflow:
        """Store, start and run a workflow to the end; return its stored state."""
        self.store.store(workflow)
        self.orchestrator.start(workflow)
        self.processor.process_all(timeout=timeout)
        return self.store.retrieve(workflow.id)

    def another_processor(self, config: QueueProcessorConfig | None = None) -> QueueProcessor:
        """One more processor on the same database (stopped at teardown)."""
        processor = QueueProcessor(
            self.queue,
            store=self.store,
            task_registry=self.registry,
            config=config or self.processor.config,
        )
        self.extra.append(processor)
        return processor


class MakeEngine(Protocol):
    """The ``make_engine`` fixture of this directory."""

    def __call__(
        self,
        target: EngineTarget | None = None,
        config: QueueProcessorConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        lock_duration: timedelta = ...,
        max_attempts: int = ...,
    ) -> Engine: ...


def _make_engine_fixture(default: Callable[[], EngineTarget]) -> Iterator[MakeEngine]:
    made: list[Engine] = []

    def make(
        target: EngineTarget | None = None,
        config: QueueProcessorConfig | None = None,
        *,
        registry: TaskRegistry | None = None,
        lock_duration: timedelta = timedelta(seconds=60),
        max_attempts: int = 10,
    ) -> Engine:
        target = target or default()
        store = target.store()
        queue = target.queue(lock_duration=lock_duration, max_attempts=max_attempts)
        registry = registry if registry is not None else TaskRegistry()
        config = config or QueueProcessorConfig(poll_frequency_ms=10)
        processor = QueueProcessor(queue, store=store, task_registry=registry, config=config)
        engine = Engine(target, store, queue, registry, processor, Orchestrator(queue, store))
        made.append(engine)
        return engine

    yield make
    for engine in made:
        for processor in [engine.processor, *engine.extra]:
            processor.stop(wait=True, timeout=10)


@pytest.fixture
def make_engine(engine_url: EngineTarget) -> Iterator[MakeEngine]:
    """Build an engine on the parametrised backend (SQLite and PostgreSQL)."""
    yield from _make_engine_fixture(lambda: engine_url)


@pytest.fixture
def make_pg_engine(pg_url: str, pg_schema: str) -> Iterator[MakeEngine]:
    """Build an engine on this test's PostgreSQL schema."""
    yield from _make_engine_fixture(lambda: EngineTarget("postgres", pg_url, pg_schema))


@pytest.fixture
def pool_options() -> PoolOptions:
    """Small pools: many tests run, each with its own schema and pool."""
    return PoolOptions(min_size=1, max_size=4)


# -- workflows --------------------------------------------------------------------------


class Build:
    """Builders of stages and workflows (the ``build`` fixture)."""

    @staticmethod
    def stage(
        ref: str,
        task: str,
        requires: Iterable[str] = (),
        context: dict[str, Any] | None = None,
    ) -> StageExecution:
        """A one-task stage whose task type is ``task``."""
        return StageExecution(
            ref_id=ref,
            type=task,
            name=ref,
            context=dict(context or {}),
            requisite_stage_ref_ids=set(requires),
            tasks=[TaskExecution.create(f"{ref}.{task}", task)],
        )

    @staticmethod
    def workflow(*stages: StageExecution, name: str = "pg", **context: Any) -> Workflow:
        """A workflow of the given stages."""
        return Workflow.create(application="tests", name=name, stages=stages, context=context)

    def chain(self, task: str, length: int, name: str = "chain") -> Workflow:
        """``length`` stages in a line, each running ``task``."""
        refs = [f"s{i}" for i in range(length)]
        return self.workflow(
            *(self.stage(r, task, refs[i - 1 : i]) for i, r in enumerate(refs)), name=name
        )


@pytest.fixture
def build() -> Build:
    """Stage and workflow builders."""
    return Build()


class Executions:
    """Counts task executions by (workflow id, stage ref), safely across threads."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.keys: list[str] = []
        self._lock = threading.Lock()

    def record(self, s: StageExecution) -> None:
        with self._lock:
            self.counts[(s.workflow_id or "", s.ref_id)] += 1
            self.keys.append(s.idempotency_key)

    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())


@pytest.fixture
def executions() -> Executions:
    """A thread-safe execution counter for tasks."""
    return Executions()


@pytest.fixture
def poll() -> Callable[..., None]:
    """``poll(condition, what)``: wait for a condition with a hang guard."""
    return wait_until


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event blocked tasks wait on; set at teardown so no thread lingers."""
    event = threading.Event()
    yield event
    event.set()
