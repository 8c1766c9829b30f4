"""Fixtures of the monitor's tests: real databases with a worker, and a fixed source."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ulid import ULID

# monitor_support.py, beside this file: the importlib import mode puts no test directory
# on sys.path, and test modules cannot import each other.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from monitor_support import (
    PG_URL_ENV,
    Engine,
    FakeSource,
    drop_schema,
    registry,
    row,
)

from stabilize import QueueProcessor
from stabilize.connect import open_database
from stabilize.persistence.overview import QueueStats
from stabilize_monitor import DatabaseSource


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A fresh SQLite file or PostgreSQL schema, with a running worker."""
    schema: str | None = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'monitor.db'}"
    else:
        url = os.environ.get(PG_URL_ENV, "")
        if not url:
            pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
        schema = f"t_{str(ULID()).lower()}"
    store, queue = open_database(url, schema)  # creates the database, as a worker would
    source = DatabaseSource(store, queue)
    processor = QueueProcessor(source.queue, store=source.store, task_registry=registry())
    processor.start()
    try:
        yield Engine(url, schema, source, processor, source.orchestrator)
    finally:
        processor.stop()
        if schema is not None:
            drop_schema(url, schema)


@pytest.fixture
def fake_source() -> FakeSource:
    """Three workflows of two applications, a queue with one worker."""
    return FakeSource(
        rows=[
            row("wf_3", "Invoice run", "SUSPENDED", current=("approve",)),
            row("wf_2", "Nightly report", "RUNNING", application="reports", current=("b", "c")),
            row("wf_1", "Invoice run", "TERMINAL", done=2),
        ],
        stats=QueueStats(ready=4, delayed=2, leased=3, leases_by_owner={"w-1": 3}, dead_letters=1),
    )
