"""The PostgreSQL dialect: one database schema holds workflows, stages, the queue and events.

Everything PostgreSQL-specific lives in this package: the backend and its transactions,
the workflow store, the queue, the event store, waking on ``LISTEN/NOTIFY``, connections
and the SQL files (``sql/``). Importing it does not import psycopg; creating a backend
does (``pip install "stabilize-core[postgres]"``).
"""

from __future__ import annotations

from stabilize.backends.postgres._backend import (
    MESSAGE_ID_BLOCK,
    PostgresBackend,
    PostgresEventStore,
)
from stabilize.backends.postgres._connection import (
    DEFAULT_SCHEMA,
    INSTALL_HINT,
    PoolOptions,
    check_schema_name,
    connect,
    connect_kwargs,
    describe,
    event_channel,
    is_postgres_url,
    notify_channel,
    require_psycopg,
    server_address,
)
from stabilize.backends.postgres._dialect import DIALECT, PostgresDialect
from stabilize.backends.postgres._schema import (
    VERSION_TABLE,
    advisory_key,
    apply_migrations,
    read_migration_status,
)
from stabilize.backends.postgres._stores import PostgresQueue, PostgresWorkflowStore
from stabilize.backends.postgres._transaction import PostgresTransaction
from stabilize.backends.postgres._watch import EventListener

__all__ = [
    "DEFAULT_SCHEMA",
    "DIALECT",
    "INSTALL_HINT",
    "MESSAGE_ID_BLOCK",
    "VERSION_TABLE",
    "EventListener",
    "PoolOptions",
    "PostgresBackend",
    "PostgresDialect",
    "PostgresEventStore",
    "PostgresQueue",
    "PostgresTransaction",
    "PostgresWorkflowStore",
    "advisory_key",
    "apply_migrations",
    "check_schema_name",
    "connect",
    "connect_kwargs",
    "describe",
    "event_channel",
    "is_postgres_url",
    "notify_channel",
    "read_migration_status",
    "require_psycopg",
    "server_address",
]
