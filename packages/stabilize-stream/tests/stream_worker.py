"""A worker process for test_stream_process.py (not a test): runs one database's queue dry.

Usage: python stream_worker.py sqlite|postgres URL [SCHEMA]
"""

from __future__ import annotations

import sys

from stabilize import (
    PostgresQueue,
    PostgresWorkflowStore,
    QueueProcessor,
    QueueProcessorConfig,
    SqliteQueue,
    SqliteWorkflowStore,
    TaskRegistry,
    TaskResult,
)
from stabilize.events import (
    EventStore,
    PostgresEventStore,
    SqliteEventStore,
    configure_event_sourcing,
)
from stabilize.persistence import WorkflowStore
from stabilize.queue import Queue


def main(argv: list[str]) -> int:
    kind, url = argv[0], argv[1]
    schema = argv[2] if len(argv) > 2 else None
    store: WorkflowStore
    queue: Queue
    events: EventStore
    if kind == "postgres":
        store = PostgresWorkflowStore(url, schema=schema)
        queue = PostgresQueue(url, schema=schema)
        events = PostgresEventStore(url, schema=schema)
    else:
        store = SqliteWorkflowStore(url, create_tables=True)
        queue = SqliteQueue(url)
        events = SqliteEventStore(url)
    configure_event_sourcing(events)
    registry = TaskRegistry()
    registry.register("step", lambda stage: TaskResult.success(outputs={"pid": "worker"}))
    processor = QueueProcessor(
        queue,
        store=store,
        task_registry=registry,
        config=QueueProcessorConfig(poll_frequency_ms=10),
    )
    processor.process_all(timeout=30.0)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
