"""Fixtures shared by stabilize-core's tests."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import pytest
from ulid import ULID

import stabilize
from stabilize import _plugins
from stabilize.backends._base import Backend
from stabilize.events import EventStore
from stabilize.persistence import WorkflowStore
from stabilize.queue import Queue

# Helper modules of this directory (process_support) for the conftests below it: the
# importlib import mode puts no test directory on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def _drop_lazy_exports() -> None:
    # Read the names before clearing the cache: the group may hold a test's fake entries.
    lazy = {*_plugins.export_names(), *_plugins.OPTIONAL_EXPORTS} - set(stabilize.__all__)
    for name in lazy:
        stabilize.__dict__.pop(name, None)


@pytest.fixture(autouse=True)
def reset_plugins() -> Iterator[None]:
    """Forget discovered plugins and lazily cached exports around every test."""
    _plugins.group.cache_clear()
    _drop_lazy_exports()
    _plugins.group.cache_clear()
    yield
    _drop_lazy_exports()
    _plugins.group.cache_clear()


class FakeDistribution(importlib.metadata.Distribution):
    """An installed distribution that exists only in memory (metadata, entry points)."""

    def __init__(self, name: str, version: str, entry_points: dict[str, dict[str, str]]) -> None:
        self._files = {
            "METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
            "entry_points.txt": "".join(
                f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in entries.items())
                for group, entries in entry_points.items()
            ),
        }

    def read_text(self, filename: str) -> str | None:
        return self._files.get(filename)

    def locate_file(self, path: str | PathLike[str]) -> Path:
        return Path(path)


class FakePlugins:
    """The entry points ``importlib.metadata.entry_points()`` reports during one test."""

    def __init__(self) -> None:
        self.entry_points: list[importlib.metadata.EntryPoint] = []
        self.scans = 0

    def add(self, group: str, name: str, value: str) -> importlib.metadata.EntryPoint:
        """Add a hand-built entry point (it belongs to no distribution)."""
        ep = importlib.metadata.EntryPoint(name=name, value=value, group=group)
        self.entry_points.append(ep)
        return ep

    def add_dist(
        self, dist: str, version: str, entry_points: dict[str, dict[str, str]]
    ) -> FakeDistribution:
        """Add an installed distribution and the entry points it declares."""
        distribution = FakeDistribution(dist, version, entry_points)
        self.entry_points.extend(distribution.entry_points)
        return distribution

    def __call__(self, **params: Any) -> importlib.metadata.EntryPoints:
        self.scans += 1
        return importlib.metadata.EntryPoints(self.entry_points).select(**params)


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> FakePlugins:
    """Replace every installed plugin with the ones a test adds (none to start with)."""
    plugins = FakePlugins()
    monkeypatch.delenv(_plugins.DISABLE_AUTOLOAD_ENV, raising=False)
    monkeypatch.setattr(importlib.metadata, "entry_points", plugins)
    return plugins


# -- both backends: a fresh SQLite file or a fresh PostgreSQL schema per test ---------------

PG_URL_ENV = "STABILIZE_TEST_PG_URL"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
"""The params of the ``backend`` fixture (``-m "not postgres"`` runs SQLite only)."""


def new_schema_name() -> str:
    """A schema name no other test uses: ``t_<ulid>`` in lower case."""
    return f"t_{str(ULID()).lower()}"


def close_pg_backends(schema: str) -> None:
    """Close every PostgreSQL backend of this process on ``schema`` (pools and listeners)."""
    from stabilize.backends.postgres import PostgresBackend

    for key, backend in list(PostgresBackend._instances.items()):
        if key[1] == schema:
            backend.close()


def drop_pg_schema(url: str, schema: str) -> None:
    """Close this process's backends on ``schema``, then drop it and everything in it."""
    import psycopg
    from psycopg import sql

    close_pg_backends(schema)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The test server's URL, or skip: the variable is unset."""
    url = os.environ.get(PG_URL_ENV)
    if not url:
        pytest.skip(f"{PG_URL_ENV} is not set: PostgreSQL tests need a server URL")
    return url


class PgSchemas:
    """PostgreSQL schemas of one test, each dropped with everything in it at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.names: list[str] = []

    def name(self) -> str:
        """A fresh schema name, not created (dropped at teardown if the test creates it)."""
        schema = new_schema_name()
        self.names.append(schema)
        return schema

    def create(self) -> str:
        """A fresh, empty schema."""
        import psycopg
        from psycopg import sql

        schema = self.name()
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return schema

    def drop_all(self) -> None:
        for schema in reversed(self.names):
            drop_pg_schema(self.url, schema)
        self.names.clear()


@pytest.fixture
def pg_schemas(pg_url: str) -> Iterator[PgSchemas]:
    """``pg_schemas.create()`` / ``.name()``: fresh schemas, dropped at teardown."""
    schemas = PgSchemas(pg_url)
    yield schemas
    schemas.drop_all()


@dataclass(frozen=True)
class Database:
    """Where a test's engine keeps its state: a SQLite file, or a PostgreSQL URL and schema."""

    kind: str
    """``"sqlite"`` or ``"postgres"`` (the ``backend`` fixture's param)."""
    url: str
    schema: str | None = None

    @property
    def is_postgres(self) -> bool:
        return self.kind == "postgres"

    def store(self) -> WorkflowStore:
        """A workflow store on this database (tables created if missing)."""
        from stabilize import PostgresWorkflowStore, SqliteWorkflowStore

        if self.is_postgres:
            return PostgresWorkflowStore(self.url, schema=self.schema)
        return SqliteWorkflowStore(self.url, create_tables=True)

    def queue(self, **kwargs: Any) -> Queue:
        """A queue on this database (``lock_duration``, ``max_attempts`` pass through)."""
        from stabilize import PostgresQueue, SqliteQueue

        if self.is_postgres:
            return PostgresQueue(self.url, schema=self.schema, **kwargs)
        queue = SqliteQueue(self.url, **kwargs)
        queue._create_table()
        return queue

    def event_store(self) -> EventStore:
        """An event store whose ``events`` table is in this database."""
        from stabilize.events import PostgresEventStore, SqliteEventStore

        if self.is_postgres:
            return PostgresEventStore(self.url, schema=self.schema)
        return SqliteEventStore(self.url, create_tables=True)

    def backend(self) -> Backend:
        """The process-wide backend of this database (opened and migrated if needed)."""
        from stabilize.backends.postgres import PostgresBackend
        from stabilize.backends.sqlite import SqliteBackend

        if self.is_postgres:
            return PostgresBackend.for_url(self.url, self.schema)
        return SqliteBackend.for_url(self.url)


class Databases:
    """Fresh databases of the ``backend`` fixture's kind (more than one per test)."""

    def __init__(self, first: Database, tmp_path: Path, schemas: PgSchemas | None) -> None:
        self.first = first
        self.tmp_path = tmp_path
        self.schemas = schemas

    def new(self, name: str | None = None) -> Database:
        """Another fresh database: a new SQLite file, or a new schema on the same server."""
        if self.first.is_postgres:
            assert self.schemas is not None
            return Database("postgres", self.first.url, self.schemas.create())
        stem = name or new_schema_name()
        return Database("sqlite", f"sqlite:///{self.tmp_path / stem}.db")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """This test's database: a fresh SQLite file, or a fresh PostgreSQL schema.

    The PostgreSQL param skips with a message when ``STABILIZE_TEST_PG_URL`` is unset; its
    schema ``t_<ulid>`` is dropped with everything in it at teardown.
    """
    if request.param == "sqlite":
        return Database("sqlite", f"sqlite:///{tmp_path / 'wf.db'}")
    schemas: PgSchemas = request.getfixturevalue("pg_schemas")
    return Database("postgres", schemas.url, schemas.create())


@pytest.fixture
def databases(request: pytest.FixtureRequest, backend: Database, tmp_path: Path) -> Databases:
    """``databases.new()``: more fresh databases of the same kind as ``backend``."""
    schemas: PgSchemas | None = (
        request.getfixturevalue("pg_schemas") if backend.is_postgres else None
    )
    return Databases(backend, tmp_path, schemas)


# -- the deterministic simulation's options (tests/simulation/) -----------------------------
# Declared here, not in tests/simulation/conftest.py: pytest takes options only from the
# conftests it loads at startup, and a run of the whole suite does not load that one then.


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("simulation", "deterministic simulation (tests/simulation)")
    group.addoption("--sim-seed", type=int, default=None, help="replay exactly this seed")
    group.addoption(
        "--sim-runs", type=int, default=None, help="how many seeds to simulate (default: 80)"
    )
    group.addoption("--sim-first", type=int, default=None, help="the first seed of --sim-runs")
