-- stabilize SQLite schema, version 1: workflows, stages and the message queue.
-- Rows hold the model as JSON (body); the columns beside it are what queries filter on.

CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    version     INTEGER NOT NULL,
    event_seq   INTEGER NOT NULL DEFAULT 0,
    body        TEXT NOT NULL
);
CREATE INDEX workflows_by_application ON workflows (application, status, created_at);
CREATE INDEX workflows_by_status ON workflows (status, created_at);

CREATE TABLE stages (
    id          TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL REFERENCES workflows (id) ON DELETE CASCADE,
    position    INTEGER NOT NULL,
    ref_id      TEXT NOT NULL,
    status      TEXT NOT NULL,
    body        TEXT NOT NULL,
    UNIQUE (workflow_id, ref_id)
);
CREATE INDEX stages_by_workflow ON stages (workflow_id, position);

CREATE TABLE queue_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage_id    TEXT,
    task_id     TEXT,
    payload     TEXT NOT NULL DEFAULT '{}',
    deliver_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token INTEGER NOT NULL DEFAULT 0,
    lease_until INTEGER,
    created_at  INTEGER NOT NULL
);
CREATE INDEX queue_messages_ready ON queue_messages (deliver_at, id);
CREATE INDEX queue_messages_by_workflow ON queue_messages (workflow_id);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage_id    TEXT,
    task_id     TEXT,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
