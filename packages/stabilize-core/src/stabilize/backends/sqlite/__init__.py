"""The SQLite dialect: one file holds workflows, stages, the queue and the event log.

Everything SQLite-specific lives in this package: the backend and its transactions, the
workflow store, the queue, the event store, noticing commits (``data_version``), the
file handling and the SQL files (``sql/``).
"""

from __future__ import annotations

from stabilize.backends.sqlite._backend import SqliteBackend, SqliteEventStore
from stabilize.backends.sqlite._dialect import DIALECT, SqliteDialect
from stabilize.backends.sqlite._files import check_directory, connect_existing, sqlite_path
from stabilize.backends.sqlite._schema import (
    EVENT_ROWID_TIME_SHIFT,
    check_event_log,
    check_schema_version,
    latest_version,
    upgrade_event_table,
)
from stabilize.backends.sqlite._settings import JOURNAL_MODES, SYNCHRONOUS_LEVELS, sqlite_settings
from stabilize.backends.sqlite._stores import SqliteQueue, SqliteWorkflowStore
from stabilize.backends.sqlite._watch import DataVersionWatcher

__all__ = [
    "DIALECT",
    "EVENT_ROWID_TIME_SHIFT",
    "JOURNAL_MODES",
    "SYNCHRONOUS_LEVELS",
    "DataVersionWatcher",
    "SqliteBackend",
    "SqliteDialect",
    "SqliteEventStore",
    "SqliteQueue",
    "SqliteWorkflowStore",
    "check_directory",
    "check_event_log",
    "check_schema_version",
    "connect_existing",
    "latest_version",
    "sqlite_path",
    "sqlite_settings",
    "upgrade_event_table",
]
