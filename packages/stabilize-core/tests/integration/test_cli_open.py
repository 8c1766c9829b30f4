"""The ``stabilize`` commands open a database, never create one (issue 13).

Only ``mg-up`` (and ``demo``) may create a file, a schema or tables. Every other command
refuses a missing database, a database of another schema version, a URL that names no
database and an unreachable server in one line, and leaves everything as it was.
"""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from stabilize import SqliteQueue, SqliteWorkflowStore
from stabilize.backends.sql import migrations
from stabilize.cli import main
from stabilize.connect import open_database
from stabilize.errors import DatabaseNotFoundError, SchemaVersionError
from stabilize.events import SqliteEventStore, open_event_store

if TYPE_CHECKING:
    from conftest import PgSchemas

LATEST = migrations("sqlite")[-1][0]
NEWER = LATEST + 1
DOWN_URL = "postgresql://root@127.0.0.1:1/test"
"""A server that is down: nothing listens on port 1."""


def stabilize(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "STABILIZE_DISABLE_PLUGIN_AUTOLOAD"}
    return subprocess.run(
        [sys.executable, "-m", "stabilize", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        check=False,
        timeout=50,
    )


def error_line(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The one line a failed command printed (asserting there is exactly one)."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"stabilize {command}: error: "), proc.stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_database(path: Path) -> str:
    """A stabilize SQLite database at ``path``, made by ``mg-up`` in another process.

    Another process: a backend opened here would stay cached for the file.
    """
    url = f"sqlite:///{path}"
    up = stabilize("mg-up", "--db-url", url)
    assert up.returncode == 0, up.stderr
    return url


def set_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def pg_schema_exists(url: str, schema: str) -> bool:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return row.fetchone() is not None


def pg_tables(url: str, schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        return [r[0] for r in rows.fetchall()]


COMMANDS = {
    "purge": ["purge", "--older-than", "1d"],
    "mg-status": ["mg-status"],
}
"""Core's commands that open an existing database, with the options they need."""


# -- SQLite: a missing file, a file that is not a stabilize database -----------------------


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: Path, command: str) -> None:
    path = tmp_path / "typo" / "wf.db"

    proc = stabilize(*COMMANDS[command], "--db-url", f"sqlite:///{path}")

    assert proc.returncode == 1
    line = error_line(proc, command)
    assert f"no stabilize database at {path}" in line
    assert "stabilize mg-up --db-url" in line
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # neither the file nor its directory


# mg-status reports an empty file as version 0 (as it does an empty PostgreSQL schema).
@pytest.mark.parametrize(
    ("command", "content", "says"),
    [
        ("purge", b"", "holds no stabilize tables"),
        ("purge", b"not a database at all" * 10, "file is not a database"),
        ("mg-status", b"not a database at all" * 10, "file is not a database"),
    ],
)
def test_a_file_that_is_no_stabilize_database_is_left_alone(
    tmp_path: Path, command: str, content: bytes, says: str
) -> None:
    path = tmp_path / "other.db"
    path.write_bytes(content)

    proc = stabilize(*COMMANDS[command], "--db-url", f"sqlite:///{path}")

    assert proc.returncode == 1
    assert says in error_line(proc, command)
    assert path.read_bytes() == content


def test_purge_opens_an_existing_database(tmp_path: Path) -> None:
    url = make_database(tmp_path / "wf.db")

    proc = stabilize("purge", "--older-than", "1d", "--db-url", url)

    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "deleted 0 workflows\n", "")


def test_mg_up_creates_the_file_the_others_then_open(tmp_path: Path) -> None:
    path = tmp_path / "new" / "wf.db"
    path.parent.mkdir()  # a missing directory is refused (issue 15), even by mg-up
    url = f"sqlite:///{path}"

    up = stabilize("mg-up", "--db-url", url)
    status = stabilize("mg-status", "--db-url", url)

    assert up.returncode == 0, up.stderr
    assert path.is_file()
    assert status.returncode == 0, status.stderr
    assert f"current version: {LATEST}" in status.stdout


# -- schema versions: newer files are refused everywhere, older ones by open-only paths ----


def test_a_newer_sqlite_file_is_refused_by_every_command(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    url = make_database(path)
    set_version(path, NEWER)
    before = digest(path)

    for command, args in [*COMMANDS.items(), ("mg-up", ["mg-up"])]:
        proc = stabilize(*args, "--db-url", url)
        assert proc.returncode == 1, (command, proc.stderr)
        line = error_line(proc, command)
        assert str(NEWER) in line
        assert str(LATEST) in line
        assert "upgrade stabilize-core" in line

    assert digest(path) == before


@pytest.mark.parametrize(
    "opener",
    [
        SqliteWorkflowStore,
        lambda url: SqliteWorkflowStore(url, create=False),
        SqliteQueue,
        SqliteEventStore,
        open_event_store,
        lambda url: open_event_store(url, create=False),
        open_database,
        lambda url: open_database(url, create=False),
    ],
    ids=[
        "store",
        "store-open-only",
        "queue",
        "event-store",
        "open_event_store",
        "open_event_store-open-only",
        "open_database",
        "open_database-open-only",
    ],
)
def test_a_newer_sqlite_file_is_refused_by_every_constructor(
    tmp_path: Path, opener: Callable[[str], object]
) -> None:
    # Before this fix SqliteEventStore (what `stabilize serve` opens) read such a file.
    path = tmp_path / "wf.db"
    url = make_database(path)
    set_version(path, NEWER)
    before = digest(path)

    with pytest.raises(SchemaVersionError) as raised:
        opener(url)

    assert f"schema version {NEWER}" in str(raised.value)
    assert f"up to {LATEST}" in str(raised.value)
    assert digest(path) == before


def test_serve_refuses_a_newer_sqlite_file(tmp_path: Path) -> None:
    pytest.importorskip("stabilize.streaming", reason="stabilize serve comes from stabilize-stream")
    path = tmp_path / "wf.db"
    url = make_database(path)
    set_version(path, NEWER)
    before = digest(path)

    proc = stabilize("serve", "--port", "0", "--db-url", url)

    assert proc.returncode == 1
    assert f"schema version {NEWER}" in error_line(proc, "serve")
    assert digest(path) == before


def test_open_only_refuses_an_older_sqlite_file_and_leaves_it(tmp_path: Path) -> None:
    # An open-only path never migrates: workers of the older version may still use it.
    path = tmp_path / "wf.db"
    url = make_database(path)
    set_version(path, LATEST - 1)
    before = digest(path)

    proc = stabilize("purge", "--older-than", "1d", "--db-url", url)
    with pytest.raises(SchemaVersionError, match=f"at schema version {LATEST - 1}"):
        SqliteWorkflowStore(url, create=False)

    assert proc.returncode == 1
    assert f"needs {LATEST}" in error_line(proc, "purge")
    assert digest(path) == before


# -- the library keeps creating by default; create=False is the open-only path ---------------


def test_library_openers_create_by_default_and_not_with_create_false(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    for opener in (
        lambda url: SqliteWorkflowStore(url, create=False),
        lambda url: open_database(url, create=False),
        lambda url: open_event_store(url, create=False),
    ):
        with pytest.raises(DatabaseNotFoundError, match="no stabilize database"):
            opener(f"sqlite:///{missing}")
    assert not missing.exists()

    store, queue = open_database(f"sqlite:///{tmp_path / 'made.db'}")
    assert (tmp_path / "made.db").is_file()
    assert store.count() == 0
    assert queue.backend is store.backend
    # create_tables=False opens only, as on PostgreSQL (issue 15; it used to be ignored).
    with pytest.raises(DatabaseNotFoundError, match="no stabilize database"):
        SqliteWorkflowStore(f"sqlite:///{tmp_path / 'also.db'}", create_tables=False)
    assert not (tmp_path / "also.db").exists()


def test_open_event_store_open_only_reads_a_log_kept_in_a_file_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}"
    SqliteEventStore(url).close()

    log = open_event_store(url, create=False)

    assert log.get_events("wf_1") == []


# -- URLs that name no database ------------------------------------------------------------


@pytest.mark.parametrize("command", ["mg-up", *sorted(COMMANDS)])
@pytest.mark.parametrize("url", ["garbage", "mysql://h/db", "sqlite://relative.db", "x.db"])
def test_a_url_that_is_no_database_url_is_refused(tmp_path: Path, command: str, url: str) -> None:
    args = COMMANDS.get(command, [command])

    proc = stabilize(*args, f"--db-url={url}", cwd=tmp_path)

    assert proc.returncode == 2
    line = error_line(proc, command)
    assert repr(url) in line
    assert "sqlite:///" in line
    assert list(tmp_path.iterdir()) == []


@settings(max_examples=150, deadline=None)
@given(url=st.text().filter(lambda u: not u.startswith(("sqlite:", "postgres"))))
@example(url="garbage")
@example(url="")
@example(url="-")
@example(url="--")  # argparse before 3.12 turns --db-url=-- into an empty list
def test_mg_up_creates_nothing_from_a_url_that_is_no_database_url(url: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        err = io.StringIO()
        try:
            with redirect_stderr(err), redirect_stdout(io.StringIO()):
                code = main(["mg-up", f"--db-url={url}"])
        finally:
            os.chdir(cwd)
        assert code == 2
        assert err.getvalue().startswith("stabilize mg-up: error: not a database URL")
        assert os.listdir(tmp) == []


# -- PostgreSQL: a missing schema, an empty one, a server that is down ---------------------


@pytest.mark.postgres
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_missing_postgres_schema_is_named_and_not_created(
    pg_url: str, pg_schemas: PgSchemas, command: str
) -> None:
    schema = pg_schemas.name()

    proc = stabilize(*COMMANDS[command], "--db-url", pg_url, "--schema", schema)

    assert proc.returncode == 1
    line = error_line(proc, command)
    assert f"schema {schema} does not exist" in line
    assert f"stabilize mg-up --db-url ... --schema {schema}" in line
    assert not pg_schema_exists(pg_url, schema)


@pytest.mark.postgres
def test_an_empty_postgres_schema_gets_no_tables(pg_url: str, pg_schemas: PgSchemas) -> None:
    schema = pg_schemas.create()

    proc = stabilize("purge", "--older-than", "1d", "--db-url", pg_url, "--schema", schema)

    assert proc.returncode == 1
    assert "holds no stabilize tables" in error_line(proc, "purge")
    assert pg_tables(pg_url, schema) == []


@pytest.mark.postgres
def test_postgres_open_only_library_paths_create_nothing(
    pg_url: str, pg_schemas: PgSchemas
) -> None:
    schema = pg_schemas.name()

    with pytest.raises(DatabaseNotFoundError, match=f"schema {schema} does not exist"):
        open_database(pg_url, schema, create=False)
    with pytest.raises(DatabaseNotFoundError, match=f"schema {schema} does not exist"):
        open_event_store(pg_url, schema, create=False)

    assert not pg_schema_exists(pg_url, schema)
    open_database(pg_url, schema)  # the default still creates
    assert "workflows" in pg_tables(pg_url, schema)


@pytest.mark.parametrize("command", ["mg-up", *sorted(COMMANDS)])
def test_a_postgres_server_that_is_down_is_named_by_host_and_port(command: str) -> None:
    pytest.importorskip("psycopg")
    args = COMMANDS.get(command, [command])

    proc = stabilize(*args, "--db-url", DOWN_URL)

    assert proc.returncode == 1
    line = error_line(proc, command)
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in line
