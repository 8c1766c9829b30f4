"""Schema versions of SQLite files (``PRAGMA user_version``) and the event table's layout."""

from __future__ import annotations

import sqlite3

from stabilize.backends.sql import migrations
from stabilize.backends.sqlite._files import connect_existing, sqlite_path
from stabilize.errors import DatabaseNotFoundError, SchemaVersionError

EVENT_ROWID_TIME_SHIFT = 16
"""A row of the SQLite event log has a rowid of at least ``timestamp << 16`` (see 0003)."""


def latest_version() -> int:
    """The newest schema version this stabilize knows for SQLite."""
    return migrations("sqlite")[-1][0]


def check_schema_version(conn: sqlite3.Connection, path: str, *, current: bool = False) -> int:
    """Read the file's schema version; refuse a newer one (or, if ``current``, any other).

    Args:
        conn: A connection to the file.
        path: The file (for messages).
        current: Also refuse a file with no stabilize schema or an older one: what an
            open-only path needs, which must neither create nor migrate.

    Returns:
        The schema version (``PRAGMA user_version``).

    Raises:
        SchemaVersionError: the file was written by a newer stabilize, or (``current``)
            is older than this one.
        DatabaseNotFoundError: (``current``) the file is not a stabilize database.
    """
    latest = latest_version()
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:  # "file is not a database"
        if not current:
            raise
        raise DatabaseNotFoundError(f"no stabilize database at {path}: {exc}") from None
    if version > latest:
        raise SchemaVersionError(
            f"{path} has schema version {version}, but this stabilize knows only "
            f"up to {latest}: upgrade stabilize-core to open it"
        )
    if current and version == 0:
        raise DatabaseNotFoundError(
            f"no stabilize database at {path}: the file holds no stabilize tables (run "
            f"'stabilize mg-up --db-url sqlite:///{path}' to create them)"
        )
    if current and version < latest:
        raise SchemaVersionError(
            f"{path} is at schema version {version}, this stabilize needs {latest}: run "
            f"'stabilize mg-up --db-url sqlite:///{path}' to migrate it"
        )
    return version


def upgrade_event_table(conn: sqlite3.Connection, schema: str = "main") -> None:
    """Bring an ``events`` table created by an older version to the current layout.

    Adds the ``last_sequence`` column, and replaces the ``events_by_time`` index by rowids
    that hold the time (see ``0003_events.sql``): each row's rowid becomes its timestamp
    times 65,536 plus its rank among the rows of that millisecond, and the index goes.
    Runs in a transaction of its own unless ``conn`` is already in one.
    """
    columns = {row[1] for row in conn.execute(f"PRAGMA {schema}.table_info(events)")}
    if not columns:
        return
    if "last_sequence" not in columns:
        conn.execute(f"ALTER TABLE {schema}.events ADD COLUMN last_sequence INTEGER")
    find_index = (
        f"SELECT 1 FROM {schema}.sqlite_master WHERE type = 'index' AND name = 'events_by_time'"
    )
    if conn.execute(find_index).fetchone() is None:
        return
    own_transaction = not conn.in_transaction
    if own_transaction:
        conn.execute("BEGIN IMMEDIATE")
    try:
        if conn.execute(find_index).fetchone() is not None:  # not done meanwhile
            rows = conn.execute(
                f"SELECT rowid, timestamp FROM {schema}.events ORDER BY timestamp, rowid"
            ).fetchall()
            renumbered, previous, rank = [], None, 0
            for rowid, timestamp in rows:
                rank = rank + 1 if timestamp == previous else 1
                previous = timestamp
                renumbered.append(((timestamp << EVENT_ROWID_TIME_SHIFT) + rank, rowid))
            # Old rowids count from 1, new ones start above 2**40: no two rows ever
            # share one while this runs.
            conn.executemany(f"UPDATE {schema}.events SET rowid = ? WHERE rowid = ?", renumbered)
            conn.execute(f"DROP INDEX {schema}.events_by_time")
        if own_transaction:
            conn.execute("COMMIT")
    except BaseException:
        if own_transaction:
            conn.execute("ROLLBACK")
        raise


def statements(script: str) -> list[str]:
    """Split a migration into statements (our SQL has no semicolons inside literals)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


def check_event_log(url: str) -> None:
    """Check, changing nothing, that the file ``url`` names holds an event log to read.

    That is an engine's database at the current version, or a log kept in a file of its
    own (an ``events`` table and no stabilize schema version).

    Raises:
        DatabaseNotFoundError: there is no such file, or it holds no event log.
        SchemaVersionError: the file is an engine's database at another version.
    """
    path = sqlite_path(url)
    conn = connect_existing(path)
    try:
        find = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        try:
            standalone = conn.execute(find).fetchone() is not None
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise DatabaseNotFoundError(f"no stabilize database at {path}: {exc}") from None
        if not standalone or check_schema_version(conn, path) != 0:
            check_schema_version(conn, path, current=True)
    finally:
        conn.close()
