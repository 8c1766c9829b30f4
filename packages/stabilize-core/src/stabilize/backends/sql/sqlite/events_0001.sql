-- stabilize SQLite event log, in a file of its own (attached as schema "ev" to the
-- engine's connection, so appends share its transaction). The same table as migration
-- 0003 creates in the engine's own file; see there for the meaning of the columns.

CREATE TABLE IF NOT EXISTS {schema}events (
    workflow_id   TEXT NOT NULL,
    sequence      INTEGER NOT NULL,
    event_type    TEXT NOT NULL,
    entity_type   TEXT NOT NULL,
    entity_id     TEXT NOT NULL,
    timestamp     INTEGER NOT NULL,
    data          TEXT NOT NULL,
    last_sequence INTEGER,
    PRIMARY KEY (workflow_id, sequence)
);
CREATE INDEX IF NOT EXISTS {schema}events_by_time ON events (timestamp);
