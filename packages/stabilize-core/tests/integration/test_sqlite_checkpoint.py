"""WAL checkpoints run on a thread of their own, not inside the engine's commits."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from stabilize import SqliteWorkflowStore
from stabilize.backends.sqlite import SqliteBackend
from stabilize.backends.sqlite._checkpoint import Checkpointer


def sqlite_backend(url: str) -> SqliteBackend:
    backend = SqliteWorkflowStore(url).backend
    assert isinstance(backend, SqliteBackend)
    return backend


def wal_file(tmp_path: Path, rows: int = 0) -> tuple[Path, sqlite3.Connection]:
    """A WAL database with ``rows`` committed rows of 4 KB each, none checkpointed."""
    path = tmp_path / "w.db"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE t (body TEXT)")
    for _ in range(rows):
        conn.execute("INSERT INTO t VALUES (?)", ("x" * 4000,))
    return path, conn


def uncheckpointed_frames(path: Path) -> int:
    """Frames in the log not yet copied to the database (a no-op checkpoint reports them)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        _, log, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return int(log - done)


def test_the_engine_connection_does_not_checkpoint_in_its_commits(tmp_path, monkeypatch):
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    backend = sqlite_backend(f"sqlite:///{tmp_path / 'e.db'}")
    assert backend.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    assert backend.checkpointer is not None
    backend.close()


def test_no_checkpointer_outside_wal(tmp_path, monkeypatch):
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "DELETE")
    backend = sqlite_backend(f"sqlite:///{tmp_path / 'd.db'}")
    assert backend.checkpointer is None
    backend.close()


def test_a_burst_of_commits_wakes_the_thread(tmp_path, poll):
    path, conn = wal_file(tmp_path, rows=40)
    checkpointer = Checkpointer(str(path), every_commits=8, inline_after=10**9)
    try:
        for _ in range(8):
            checkpointer.committed(conn)
        poll(lambda: checkpointer.checkpoints >= 1, "a background checkpoint")
        # It ran on another connection while this one stayed free to commit.
        conn.execute("INSERT INTO t VALUES ('after')")
    finally:
        checkpointer.close()
        conn.close()


def test_a_quiet_period_is_checkpointed_too(tmp_path, poll):
    path, conn = wal_file(tmp_path, rows=5)
    checkpointer = Checkpointer(str(path), every_commits=10**6, inline_after=10**9)
    try:
        checkpointer.committed(conn)  # one commit, then nothing
        poll(lambda: checkpointer.checkpoints == 1, "the checkpoint of a quiet period")
        assert uncheckpointed_frames(path) == 0
    finally:
        checkpointer.close()
        conn.close()


def test_the_committer_checkpoints_itself_when_the_thread_lags(tmp_path):
    path, conn = wal_file(tmp_path, rows=5)
    checkpointer = Checkpointer(str(path), every_commits=10**6, inline_after=3)
    checkpointer.stop()  # as if the thread had died
    try:
        checkpointer.committed(conn)
        checkpointer.committed(conn)
        assert checkpointer.checkpoints == 0
        checkpointer.committed(conn)
        assert checkpointer.checkpoints == 1  # synchronously, in the committing thread
        assert uncheckpointed_frames(path) == 0
    finally:
        checkpointer.close()
        conn.close()


def test_an_engine_under_load_keeps_its_log_checkpointed(tmp_path, monkeypatch, poll):
    commits = 300
    monkeypatch.setenv("STABILIZE_SQLITE_JOURNAL_MODE", "WAL")
    backend = sqlite_backend(f"sqlite:///{tmp_path / 'e.db'}")
    checkpointer = backend.checkpointer
    assert checkpointer is not None
    for n in range(commits):
        with backend.transaction() as tx:
            tx.cur.execute(
                "INSERT INTO dead_letters (workflow_id, kind, payload, attempts, reason, "
                "created_at) VALUES ('w', 'k', ?, 1, 'r', ?)",
                ("x" * 3000, n),
            )
    # Several bursts of 64 commits: checkpointed in the background as they came.
    poll(lambda: checkpointer.checkpoints >= 2, "the background checkpoints")
    backend.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "e.db")) as conn:
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone() == (commits,)
