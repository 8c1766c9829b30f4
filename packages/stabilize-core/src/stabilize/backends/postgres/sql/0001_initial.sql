-- stabilize PostgreSQL schema, version 1: workflows, stages, the message queue and the
-- event log. Rows hold the model as JSON text (body); the columns beside it are what
-- queries filter on. Times are epoch milliseconds. Tables are created in the schema the
-- connection's search_path names.

CREATE TABLE workflows (
    id          TEXT PRIMARY KEY,
    application TEXT NOT NULL,
    name        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    version     BIGINT NOT NULL,
    event_seq   BIGINT NOT NULL DEFAULT 0,
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
    id          BIGSERIAL PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage_id    TEXT,
    task_id     TEXT,
    payload     TEXT NOT NULL DEFAULT '{}',
    deliver_at  BIGINT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_token BIGINT NOT NULL DEFAULT 0,
    lease_until BIGINT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX queue_messages_ready ON queue_messages (deliver_at, id);
CREATE INDEX queue_messages_by_workflow ON queue_messages (workflow_id);
CREATE INDEX queue_messages_by_owner ON queue_messages (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE dead_letters (
    id          BIGINT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    kind        TEXT NOT NULL,
    stage_id    TEXT,
    task_id     TEXT,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    reason      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE events (
    workflow_id TEXT NOT NULL,
    sequence    BIGINT NOT NULL,
    event_type  TEXT NOT NULL,
    entity_type TEXT NOT NULL,
    entity_id   TEXT NOT NULL,
    timestamp   BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (workflow_id, sequence)
);
CREATE INDEX events_by_time ON events (timestamp);
