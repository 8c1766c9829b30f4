"""The PostgreSQL event store, where it used to live (it is in ``stabilize.backends.postgres``).

Importing this module imports the PostgreSQL dialect package (not psycopg).
"""

from __future__ import annotations

from stabilize.backends.postgres import EventListener, PostgresEventStore

__all__ = ["EventListener", "PostgresEventStore"]
