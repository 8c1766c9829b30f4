"""SQLite journal mode, synchronous level, schema versions and sharing of backends."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from stabilize import Orchestrator, QueueProcessor, SqliteQueue, SqliteWorkflowStore
from stabilize.backends.sqlite import SqliteBackend
from stabilize.errors import SchemaVersionError

SYNC_LEVELS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from the defaults, whatever the outer environment says."""
    monkeypatch.delenv("STABILIZE_SQLITE_JOURNAL_MODE", raising=False)
    monkeypatch.delenv("STABILIZE_SQLITE_SYNCHRONOUS", raising=False)


def backend_of(store: SqliteWorkflowStore) -> SqliteBackend:
    backend = store.backend
    assert isinstance(backend, SqliteBackend)
    return backend


def file_journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return str(conn.execute("PRAGMA journal_mode").fetchone()[0])


def synchronous_in_force(backend: SqliteBackend) -> str:
    return SYNC_LEVELS[int(backend.execute("PRAGMA synchronous")[0][0])]


def test_wal_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    path = tmp_path / "wal.db"

    store = SqliteWorkflowStore(f"sqlite:///{path}", create_tables=True)

    backend = backend_of(store)
    assert backend.journal_mode == "WAL"
    assert backend.synchronous == "NORMAL"
    assert synchronous_in_force(backend) == "NORMAL"
    assert file_journal_mode(path) == "wal"


def test_lowercase_wal_is_accepted(monkeypatch, tmp_path):
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "wal")
    path = tmp_path / "wal.db"

    store = SqliteWorkflowStore(f"sqlite:///{path}")

    assert backend_of(store).journal_mode == "WAL"
    assert file_journal_mode(path) == "wal"


def test_defaults_keep_the_file_journal_and_use_full_sync(tmp_path):
    path = tmp_path / "plain.db"

    store = SqliteWorkflowStore(f"sqlite:///{path}", create_tables=True)

    backend = backend_of(store)
    assert backend.journal_mode == "DELETE"
    assert backend.synchronous == "FULL"
    assert synchronous_in_force(backend) == "FULL"
    assert file_journal_mode(path) == "delete"


def test_synchronous_override(monkeypatch, tmp_path):
    monkeypatch.setenv("STABILIZE_SQLITE_SYNCHRONOUS", "extra")

    store = SqliteWorkflowStore(f"sqlite:///{tmp_path / 'x.db'}")

    assert backend_of(store).synchronous == "EXTRA"
    assert synchronous_in_force(backend_of(store)) == "EXTRA"


def test_synchronous_override_under_wal(monkeypatch, tmp_path):
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    monkeypatch.setenv("STABILIZE_SQLITE_SYNCHRONOUS", "FULL")

    store = SqliteWorkflowStore(f"sqlite:///{tmp_path / 'x.db'}")

    assert backend_of(store).journal_mode == "WAL"
    assert synchronous_in_force(backend_of(store)) == "FULL"


@pytest.mark.parametrize(
    "variable", ["STABILIZE_SQLITE_JOURNAL_MODE", "STABILIZE_SQLITE_SYNCHRONOUS"]
)
def test_invalid_values_are_refused_naming_the_variable(monkeypatch, tmp_path, variable):
    monkeypatch.setenv(variable, "sideways")

    with pytest.raises(ValueError, match=variable):
        SqliteWorkflowStore(f"sqlite:///{tmp_path / 'x.db'}")


def test_newer_schema_version_is_refused(tmp_path):
    path = tmp_path / "future.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 999")

    with pytest.raises(SchemaVersionError, match="999"):
        SqliteWorkflowStore(f"sqlite:///{path}", create_tables=True)
    with pytest.raises(SchemaVersionError):
        SqliteQueue(f"sqlite:///{path}")


def test_schema_is_created_and_versioned(tmp_path):
    path = tmp_path / "new.db"
    SqliteWorkflowStore(f"sqlite:///{path}")

    with contextlib.closing(sqlite3.connect(path)) as conn:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert version >= 1
    assert {"workflows", "stages", "queue_messages", "dead_letters"} <= tables


def test_store_and_queue_on_one_file_share_one_backend(tmp_path):
    url = f"sqlite:///{tmp_path / 'one.db'}"

    store = SqliteWorkflowStore(url, create_tables=True)
    queue = SqliteQueue(url)
    other_spelling = SqliteQueue(str(tmp_path / "." / "one.db"))

    assert store.backend is queue.backend
    assert other_spelling.backend is store.backend
    QueueProcessor(queue, store=store).stop()


def test_store_and_queue_on_different_files_are_refused(tmp_path):
    store = SqliteWorkflowStore(f"sqlite:///{tmp_path / 'state.db'}")
    queue = SqliteQueue(f"sqlite:///{tmp_path / 'queue.db'}")

    assert store.backend is not queue.backend
    with pytest.raises(ValueError, match="same database"):
        QueueProcessor(queue, store=store)
    with pytest.raises(ValueError, match="same database"):
        Orchestrator(queue, store=store)


def test_queue_refuses_another_table_name(tmp_path):
    with pytest.raises(ValueError, match="queue_messages"):
        SqliteQueue(f"sqlite:///{tmp_path / 'x.db'}", table_name="other")


OLD_EVENTS_TABLE = """
CREATE TABLE events (
    workflow_id TEXT NOT NULL, sequence INTEGER NOT NULL, event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL, entity_id TEXT NOT NULL, timestamp INTEGER NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (workflow_id, sequence)
) WITHOUT ROWID
"""


def test_a_version_2_file_with_an_old_event_log_is_upgraded_in_place(tmp_path):
    from stabilize.backends.sql import migrations
    from stabilize.events import SqliteEventStore

    path = tmp_path / "old.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        for _version, script in migrations("sqlite")[:2]:
            conn.executescript(script)
        conn.execute(OLD_EVENTS_TABLE)  # what SqliteEventStore created before version 3
        conn.execute(
            "INSERT INTO events VALUES ('wf', 1, 'workflow.created', 'workflow', 'wf', 5, ?)",
            ('{"workflow": {}}',),
        )
        conn.execute("PRAGMA user_version = 2")
        conn.commit()

    store = SqliteWorkflowStore(f"sqlite:///{path}")
    log = SqliteEventStore(f"sqlite:///{path}", create_tables=False)
    try:
        with contextlib.closing(sqlite3.connect(path)) as conn:
            latest = migrations("sqlite")[-1][0]
            assert conn.execute("PRAGMA user_version").fetchone()[0] == latest
            columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        assert "last_sequence" in columns
        (event,) = log.get_events("wf")
        assert (event.sequence, event.event_type, event.data) == (
            1,
            "workflow.created",
            {"workflow": {}},
        )
        assert log.count() == 1
    finally:
        log.close()
        store.backend.close()
