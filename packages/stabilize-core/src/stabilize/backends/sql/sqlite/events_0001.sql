-- stabilize SQLite event log, version 1. Lives in the main database or in a file of its
-- own (attached as schema "ev" to the engine's connection, so appends share its transaction).

CREATE TABLE IF NOT EXISTS {schema}events (
    workflow_id TEXT NOT NULL,
    sequence    INTEGER NOT NULL,
    event_type  TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (workflow_id, sequence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS {schema}events_by_time ON events (timestamp);
