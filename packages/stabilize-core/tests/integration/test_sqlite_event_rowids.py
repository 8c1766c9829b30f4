"""The SQLite event log keeps its time in its rowids (no index on timestamp to write)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from stabilize import SqliteWorkflowStore, StageExecution, TaskExecution, TaskResult, Workflow
from stabilize.backends.sql import queries
from stabilize.backends.sqlite import EVENT_ROWID_TIME_SHIFT, SqliteBackend
from stabilize.events import SqliteEventStore

SHIFT = EVENT_ROWID_TIME_SHIFT


def log_row(workflow_id: str, sequence: int, timestamp: int) -> tuple[Any, ...]:
    """A row of the log as ``Transaction.flush_events`` inserts it (one event)."""
    return (workflow_id, sequence, "stage.started", "stage", "s", timestamp, "{}", None)


def insert(backend: SqliteBackend, *rows: tuple[Any, ...]) -> None:
    """Insert rows of the log through the engine's own insert, each in its own commit."""
    for row in rows:
        with backend.transaction() as tx:
            tx._insert_event_rows("", [row])


def rowids(path: Path) -> list[tuple[int, str, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(
            "SELECT rowid, workflow_id, timestamp FROM events ORDER BY rowid"
        ).fetchall()


def has_time_index(path: Path) -> bool:
    with sqlite3.connect(path) as conn:
        return (
            conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'events_by_time'"
            ).fetchone()
            is not None
        )


def backend_at(path: Path) -> SqliteBackend:
    backend = SqliteWorkflowStore(f"sqlite:///{path}").backend
    assert isinstance(backend, SqliteBackend)
    return backend


def test_rows_get_rowids_above_their_time_in_commit_order(tmp_path):
    path = tmp_path / "e.db"
    backend = backend_at(path)
    # B commits after A with an earlier time (its transaction began first).
    insert(backend, log_row("A", 1, 1_000), log_row("B", 1, 900), log_row("C", 1, 1_100))
    insert(backend, log_row("C", 2, 1_100))  # same millisecond as the row before
    rows = rowids(path)
    assert [wf for _, wf, _ in rows] == ["A", "B", "C", "C"]  # commit order
    for rowid, _, timestamp in rows:
        assert rowid >= timestamp << SHIFT
    assert not has_time_index(path)
    log = backend.own_event_store()
    assert log.recent_heads(0) == {"A": 1, "B": 1, "C": 2}
    assert log.recent_heads(950) == {"A": 1, "C": 2}  # B is older than 950, though later
    assert log.recent_heads(900) == {"A": 1, "B": 1, "C": 2}
    assert log.recent_heads(1_001) == {"C": 2}
    assert log.recent_heads(1_101) == {}
    backend.close()


def test_a_run_records_rows_whose_rowids_hold_their_time(tmp_path):
    from stabilize import Orchestrator, QueueProcessor, SqliteQueue, TaskRegistry

    url = f"sqlite:///{tmp_path / 'run.db'}"
    store = SqliteWorkflowStore(url)
    queue = SqliteQueue(url)
    registry = TaskRegistry()
    registry.register("work", lambda s: TaskResult.success(outputs={"n": 1}))
    task = TaskExecution.create("a", "work")
    only = StageExecution(ref_id="a", type="work", name="a", tasks=[task])
    wf = Workflow.create("tests", "rowids", [only])
    store.store(wf)
    Orchestrator(queue, store=store).start(wf)
    QueueProcessor(queue, store=store, task_registry=registry).process_all(timeout=30)
    rows = rowids(tmp_path / "run.db")
    assert len(rows) > 2
    assert all(rowid >= timestamp << SHIFT for rowid, _, timestamp in rows)
    last = store.backend.own_event_store().get_events(wf.id)[-1].sequence
    first_time = rows[0][2]
    assert store.backend.own_event_store().recent_heads(first_time) == {wf.id: last}


OLD_LOG = """
CREATE TABLE events (
    workflow_id TEXT NOT NULL, sequence INTEGER NOT NULL, event_type TEXT NOT NULL,
    entity_type TEXT NOT NULL, entity_id TEXT NOT NULL, timestamp INTEGER NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (workflow_id, sequence)
);
CREATE INDEX events_by_time ON events (timestamp);
"""


def old_rows(conn: sqlite3.Connection) -> None:
    """Rows as an older build wrote them: rowids 1, 2, 3, ...; some share a millisecond."""
    conn.executemany(
        "INSERT INTO events VALUES (?, ?, 'stage.started', 'stage', 's', ?, '{}')",
        [("A", 1, 1_000), ("B", 1, 900), ("A", 2, 1_000), ("C", 1, 1_100)],
    )


@pytest.mark.parametrize("where", ["engine file", "file of its own"])
def test_an_older_log_with_a_time_index_is_converted_when_opened(tmp_path, where):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_LOG)
    old_rows(conn)
    conn.commit()
    conn.close()
    if where == "engine file":
        backend = backend_at(path)  # migrates the file to the engine's schema
        log = backend.own_event_store()
    else:
        log = SqliteEventStore(f"sqlite:///{path}")
    assert not has_time_index(path)
    rows = rowids(path)
    assert sorted(wf for _, wf, _ in rows) == ["A", "A", "B", "C"]
    assert len({rowid for rowid, _, _ in rows}) == 4
    assert all(rowid >= timestamp << SHIFT for rowid, _, timestamp in rows)
    assert log.recent_heads(950) == {"A": 2, "C": 1}
    assert log.recent_heads(0) == {"A": 2, "B": 1, "C": 1}
    assert [e.sequence for e in log.get_events("A")] == [1, 2]
    if where == "engine file":
        insert(backend, log_row("B", 2, 950))
        assert log.recent_heads(950) == {"A": 2, "B": 2, "C": 1}
        assert rowids(path)[-1][1] == "B"  # above every converted row
        backend.close()
    log.close()
    # Opening it again finds nothing left to convert.
    again = SqliteEventStore(f"sqlite:///{path}")
    assert again.recent_heads(0)["A"] == 2
    again.close()


@pytest.mark.parametrize("application", [None, "tests"])
def test_recent_heads_reads_only_the_recent_rowids(tmp_path, application):
    """The query reads a range of rowids, never the whole log (as a scan of the
    ``(workflow_id, sequence)`` index for the GROUP BY would)."""
    backend = backend_at(tmp_path / "plan.db")
    insert(backend, *(log_row(f"W{i % 7}", i, 1_000 + i) for i in range(1, 60)))
    sql = queries("sqlite")[
        "recent_heads" if application is None else "recent_heads_of_application"
    ]
    params: tuple[Any, ...] = (1_050 << SHIFT, 1_050)
    if application is not None:
        params += (application,)
    plan = " ".join(row[3] for row in backend.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "USING INTEGER PRIMARY KEY (rowid>?)" in plan, plan
    assert "sqlite_autoindex_events" not in plan, plan
    backend.close()
