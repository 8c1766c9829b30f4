"""Fixtures of the stream tests: an engine with event recording on a fresh database.

``db`` runs a test on a fresh SQLite file and on a fresh PostgreSQL schema (the latter
skips without ``STABILIZE_TEST_PG_URL``).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

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
    TaskResult,
    Workflow,
)
from stabilize.events import (
    EventStore,
    PostgresEventStore,
    SqliteEventStore,
    configure_event_sourcing,
    emit_progress,
)
from stabilize.persistence import WorkflowStore
from stabilize.queue import Queue

PG_URL_ENV = "STABILIZE_TEST_PG_URL"
HANG_GUARD = 30.0
"""Seconds a condition may take before a test gives up (guards hangs only)."""


@dataclass
class StreamEngine:
    """An engine on one database, with event recording configured for it."""

    kind: str
    url: str
    schema: str | None
    store: WorkflowStore
    queue: Queue
    events: EventStore
    gate: threading.Event = field(default_factory=threading.Event)
    processors: list[QueueProcessor] = field(default_factory=list)

    hang_guard = HANG_GUARD

    @staticmethod
    def wait_until(condition: Callable[[], bool], what: str, timeout: float = HANG_GUARD) -> None:
        """Poll ``condition`` until it holds; the deadline only guards against hangs."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.005)

    @staticmethod
    def chain(*task_types: str, application: str = "stream-tests") -> Workflow:
        """A workflow of one stage per task type, in a row (``s0`` -> ``s1`` -> ...)."""
        stages = [
            StageExecution(
                ref_id=f"s{i}",
                type=task_type,
                name=f"stage {i}",
                requisite_stage_ref_ids=set() if i == 0 else {f"s{i - 1}"},
                tasks=[TaskExecution.create(f"t{i}", task_type, stage_start=True, stage_end=True)],
            )
            for i, task_type in enumerate(task_types)
        ]
        return Workflow.create(application=application, name="chain", stages=stages)

    @staticmethod
    def describe(items: list[Any]) -> list[tuple[int, str]]:
        """``(sequence, event_type)`` of each item, for readable assertion failures."""
        return [(i.sequence, i.event_type) for i in items]

    def registry(self) -> TaskRegistry:
        """``step`` succeeds; ``progress`` reports progress, then waits for ``gate``."""
        registry = TaskRegistry()
        registry.register("step", lambda stage: TaskResult.success(outputs={"ok": True}))

        def progress(stage: StageExecution) -> TaskResult:
            emit_progress(stage, "working", step=1)
            if not self.gate.wait(HANG_GUARD):
                raise RuntimeError("gate never opened")
            return TaskResult.success(outputs={"done": True})

        registry.register("progress", progress)
        return registry

    def start_processor(self) -> QueueProcessor:
        """A processor running in the background until teardown."""
        processor = QueueProcessor(
            self.queue,
            store=self.store,
            task_registry=self.registry(),
            config=QueueProcessorConfig(poll_frequency_ms=10),
        )
        self.processors.append(processor)
        processor.start()
        return processor

    def orchestrator(self) -> Orchestrator:
        return Orchestrator(self.queue, store=self.store)

    def status(self, workflow_id: str) -> str:
        return str(self.store.retrieve(workflow_id).status)


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    from stabilize.backends.postgres import PostgresBackend

    for key, backend in list(PostgresBackend._instances.items()):
        if key[1] == schema:
            backend.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StreamEngine]:
    """An engine recording events on a fresh SQLite file, or a fresh PostgreSQL schema."""
    schema: str | None = None
    engine: StreamEngine
    if request.param == "postgres":
        url = os.environ.get(PG_URL_ENV, "")
        if not url:
            pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
        import psycopg
        from psycopg import sql

        schema = f"t_{str(ULID()).lower()}"
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        pg_store = PostgresWorkflowStore(url, schema=schema)
        engine = StreamEngine(
            "postgres",
            url,
            schema,
            pg_store,
            PostgresQueue(url, schema=schema),
            PostgresEventStore(url, schema=schema),
        )
    else:
        url = f"sqlite:///{tmp_path / 'stream.db'}"
        store = SqliteWorkflowStore(url, create_tables=True)
        queue = SqliteQueue(url)
        queue._create_table()
        engine = StreamEngine("sqlite", url, None, store, queue, SqliteEventStore(url))
    configure_event_sourcing(engine.events)
    try:
        yield engine
    finally:
        engine.gate.set()
        for processor in engine.processors:
            processor.stop(wait=True, timeout=HANG_GUARD)
        configure_event_sourcing()
        engine.events.close()
        if schema is not None:
            _drop_schema(url, schema)


@pytest.fixture(autouse=True)
def no_event_sourcing_leak() -> Iterator[None]:
    """Never let one test's event recording leak into the next."""
    configure_event_sourcing()
    yield
    configure_event_sourcing()


@pytest.fixture
def spawn() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; killed and reaped at teardown."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
