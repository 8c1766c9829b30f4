"""Schema migrations: fresh schemas, idempotence, concurrent workers, newer schemas, the CLI."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
import pytest

from stabilize import PostgresQueue, PostgresWorkflowStore, SqliteWorkflowStore
from stabilize.backends.migrate import migrate_up, migration_status
from stabilize.backends.sql import migrations
from stabilize.errors import SchemaVersionError

LATEST = migrations("postgres")[-1][0]


def versions(url: str, schema: str) -> list[int]:
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        rows = conn.execute("SELECT version FROM stabilize_schema_version ORDER BY version")
        return [r[0] for r in rows.fetchall()]


def tables(url: str, schema: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return {r[0] for r in rows.fetchall()}


def stabilize_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=50,
    )


def mark_newer(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True, options=f"-csearch_path={schema}") as conn:
        conn.execute("INSERT INTO stabilize_schema_version (version) VALUES (999)")


@pytest.mark.postgres
def test_a_store_creates_a_missing_schema_at_the_latest_version(pg_url, fresh_schema_name):
    PostgresWorkflowStore(pg_url, schema=fresh_schema_name)

    assert versions(pg_url, fresh_schema_name) == list(range(1, LATEST + 1))
    assert {"workflows", "stages", "queue_messages", "dead_letters", "events"} <= tables(
        pg_url, fresh_schema_name
    )


@pytest.mark.postgres
def test_migrating_twice_changes_nothing(pg_url, pg_schema):
    before, after = migrate_up(pg_url, pg_schema)
    again_before, again_after = migrate_up(pg_url, pg_schema)

    assert (before.current, after.current) == (0, LATEST)
    assert before.pending == list(range(1, LATEST + 1))
    assert again_before.pending == []
    assert again_after.current == LATEST
    assert versions(pg_url, pg_schema) == list(range(1, LATEST + 1))


@pytest.mark.postgres
def test_four_threads_migrating_at_once_apply_each_version_once(pg_url, fresh_schema_name):
    barrier = threading.Barrier(4)
    applied: list[list[int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=20)
            before, _ = migrate_up(pg_url, fresh_schema_name)
            with lock:
                applied.append(before.pending)
        except BaseException as exc:
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert sorted(applied) == [[], [], [], list(range(1, LATEST + 1))]
    assert versions(pg_url, fresh_schema_name) == list(range(1, LATEST + 1))


@pytest.mark.postgres
def test_four_processes_running_mg_up_at_once_are_safe(pg_url, fresh_schema_name):
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    args = ["mg-up", "--db-url", pg_url, "--schema", fresh_schema_name]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "stabilize", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=50) for p in procs]

    assert [p.returncode for p in procs] == [0, 0, 0, 0], [err for _, err in outputs]
    applied = [out for out, _ in outputs if "applied: 0001" in out]
    assert len(applied) == 1
    assert sum("nothing to apply" in out for out, _ in outputs) == 3
    assert versions(pg_url, fresh_schema_name) == list(range(1, LATEST + 1))


@pytest.mark.postgres
def test_a_newer_schema_is_refused(pg_url, pg_schema):
    migrate_up(pg_url, pg_schema)
    mark_newer(pg_url, pg_schema)

    with pytest.raises(SchemaVersionError, match=r"schema version 999.*upgrade stabilize-core"):
        PostgresWorkflowStore(pg_url, schema=pg_schema)
    with pytest.raises(SchemaVersionError, match="999"):
        PostgresQueue(pg_url, schema=pg_schema)
    with pytest.raises(SchemaVersionError, match="999"):
        migrate_up(pg_url, pg_schema)
    assert migration_status(pg_url, pg_schema).too_new


@pytest.mark.postgres
def test_without_create_tables_an_unmigrated_schema_is_refused(pg_url, pg_schema):
    with pytest.raises(SchemaVersionError, match="mg-up"):
        PostgresWorkflowStore(pg_url, schema=pg_schema, create_tables=False)

    migrate_up(pg_url, pg_schema)
    PostgresWorkflowStore(pg_url, schema=pg_schema, create_tables=False)  # now accepted


@pytest.mark.postgres
def test_cli_mg_status_and_mg_up_with_a_schema(pg_url, pg_schema):
    status = stabilize_cli("mg-status", "--db-url", pg_url, "--schema", pg_schema)
    assert status.returncode == 0, status.stderr
    assert "current version: 0" in status.stdout
    assert f"latest version: {LATEST}" in status.stdout
    assert "pending: 0001" in status.stdout
    assert pg_schema in status.stdout

    up = stabilize_cli("mg-up", "--db-url", pg_url, "--schema", pg_schema)
    assert up.returncode == 0, up.stderr
    assert "applied: 0001" in up.stdout
    assert f"schema version: {LATEST}" in up.stdout

    again = stabilize_cli("mg-status", "--db-url", pg_url, "--schema", pg_schema)
    assert again.returncode == 0, again.stderr
    assert f"current version: {LATEST}" in again.stdout
    assert "pending: none" in again.stdout


@pytest.mark.postgres
def test_cli_reports_a_newer_schema_and_a_bad_server(pg_url, pg_schema):
    migrate_up(pg_url, pg_schema)
    mark_newer(pg_url, pg_schema)

    up = stabilize_cli("mg-up", "--db-url", pg_url, "--schema", pg_schema)
    status = stabilize_cli("mg-status", "--db-url", pg_url, "--schema", pg_schema)
    unknown = stabilize_cli("mg-status", "--db-url", "postgresql://no_such_role_x@127.0.0.1:5432/x")

    assert up.returncode == 1
    assert "999" in up.stderr
    assert status.returncode == 1
    assert "current version: 999" in status.stdout
    assert "newer" in status.stderr
    assert unknown.returncode == 1
    assert "error" in unknown.stderr


def test_cli_on_a_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wf.db'}"

    before = stabilize_cli("mg-status", "--db-url", url)
    up = stabilize_cli("mg-up", "--db-url", url)
    after = stabilize_cli("mg-status", "--db-url", url)
    schema = stabilize_cli("mg-up", "--db-url", url, "--schema", "x")

    assert before.returncode == 1  # mg-status names a missing file, creates none
    assert "no stabilize database" in before.stderr
    assert up.returncode == 0, up.stderr
    assert "applied: 0001" in up.stdout
    assert after.returncode == 0, after.stderr
    assert "pending: none" in after.stdout
    assert schema.returncode == 1
    assert "PostgreSQL only" in schema.stderr
    SqliteWorkflowStore(url)  # the migrated file opens


def test_sqlite_newer_file_is_refused_by_mg_up(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    url = f"sqlite:///{path}"
    SqliteWorkflowStore(url).backend.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 999")
    conn.close()

    up = stabilize_cli("mg-up", "--db-url", url)

    assert up.returncode == 1
    assert "999" in up.stderr


def test_help_lists_the_migration_commands():
    proc = stabilize_cli("--help")

    assert proc.returncode == 0
    assert "mg-up" in proc.stdout
    assert "mg-status" in proc.stdout
