-- stabilize SQLite schema, version 2: mutual exclusion across workflows (mutex_key).

CREATE TABLE mutex_holders (
    key         TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    stage_id    TEXT NOT NULL,
    acquired_at INTEGER NOT NULL
);

CREATE TABLE mutex_waiters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key         TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    stage_id    TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX mutex_waiters_by_key ON mutex_waiters (key, id);
