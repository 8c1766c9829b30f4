-- stabilize SQLite schema, version 3: the event log in the engine's own file (recording is
-- on by default). SqliteEventStore runs this file too, to create the log in a file of its
-- own. A table created by an earlier version gets the last_sequence column added in code.
--
-- One row holds the events of one transition of one workflow: sequence .. last_sequence.
-- A row with last_sequence NULL is one event (event_type, entity_type, entity_id, data);
-- a row with last_sequence set has event_type '*' and data is a JSON array of
-- [event_type, entity_type, entity_id, data] for each of its events, in sequence order.
-- A rowid table: rows of about a kilobyte would spill to overflow pages in a WITHOUT ROWID
-- table (whose rows live in index pages), costing a page write more per commit.
--
-- The rowid holds the time, so that no index on timestamp costs a page write per commit:
-- a row is inserted with rowid max(timestamp << 16, the largest rowid + 1), so every row
-- has rowid >= timestamp << 16, and "timestamp >= T" is found among "rowid >= T << 16"
-- (a range of the table itself). Earlier builds of this table had an index events_by_time
-- instead; opening such a file converts it (stabilize.backends.sqlite.upgrade_event_table).

CREATE TABLE IF NOT EXISTS events (
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
