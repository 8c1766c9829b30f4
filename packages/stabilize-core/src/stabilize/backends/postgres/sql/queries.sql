-- Named queries of the PostgreSQL backend. Parameters are positional (%s); the backend
-- replaces {channel} with the schema's NOTIFY channel and {ev} with the events table prefix.

-- name: workflow_version
SELECT version FROM workflows WHERE id = %s FOR UPDATE;

-- name: load_workflow
SELECT body, version, event_seq FROM workflows WHERE id = %s;

-- name: load_stages
SELECT body FROM stages WHERE workflow_id = %s ORDER BY position;

-- name: load_stage
SELECT body FROM stages WHERE id = %s;

-- name: load_stages_by_id
SELECT id, body FROM stages WHERE id = ANY(%s);

-- name: insert_workflow
INSERT INTO workflows (id, application, name, status, created_at, updated_at, version, event_seq, body)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s);

-- name: insert_stage
INSERT INTO stages (id, workflow_id, position, ref_id, status, body) VALUES (%s, %s, %s, %s, %s, %s);

-- name: update_workflow
UPDATE workflows SET status = %s, body = %s, version = %s, updated_at = %s, event_seq = %s WHERE id = %s;

-- name: bump_workflow
UPDATE workflows SET version = %s, updated_at = %s, event_seq = %s WHERE id = %s;

-- name: update_stage
UPDATE stages SET status = %s, body = %s WHERE id = %s;

-- name: reserve_message_ids
-- Ids for new queue messages, taken from the queue's sequence in blocks (the inserts go
-- with the transaction's other writes, see _pg_cursor.write_statement).
SELECT nextval(pg_get_serial_sequence('queue_messages', 'id')) FROM generate_series(1, %s);

-- name: ack_and_lock
-- Acknowledge a message and lock its workflow row (as workflow_version does), returning
-- the workflow's version (NULL if it is gone); no row when the lease no longer held.
WITH acked AS (
    DELETE FROM queue_messages WHERE id = %s AND lease_token = %s AND lease_owner = %s
    RETURNING workflow_id
)
SELECT (SELECT version FROM workflows WHERE id = acked.workflow_id FOR UPDATE) FROM acked;

-- name: ack_many_and_lock
-- ack_and_lock for several messages: (ids, lease tokens, owner). Returns one row per
-- message whose lease still held: its id, its workflow and the workflow's version (NULL if
-- the workflow is gone). Workflow rows are locked in id order (no deadlock between
-- workers acknowledging messages of the same workflows).
WITH acked AS (
    DELETE FROM queue_messages m
    USING unnest(%s::bigint[], %s::bigint[]) AS a(id, token)
    WHERE m.id = a.id AND m.lease_token = a.token AND m.lease_owner = %s
    RETURNING m.id, m.workflow_id
), locked AS (
    SELECT id, version FROM workflows
    WHERE id IN (SELECT workflow_id FROM acked)
    ORDER BY id
    FOR UPDATE
)
SELECT acked.id, acked.workflow_id, locked.version
FROM acked LEFT JOIN locked ON locked.id = acked.workflow_id;

-- name: ack
-- Returns the id when the lease still held (the fence), so that a pipelined transaction
-- reads the outcome without a separate row count.
DELETE FROM queue_messages WHERE id = %s AND lease_token = %s AND lease_owner = %s RETURNING id;

-- name: delete_message
DELETE FROM queue_messages WHERE id = %s;

-- name: claim
-- Select and lease in one statement: rows other workers hold locked are skipped; the
-- caller orders the result by (deliver_at, id), the order they were picked in. A message an
-- idle waiter of this process reserved (reserve_for_wake_up: it had no lease) counts as
-- unleased. The workflow of each message taken is locked here too, skipping workflows
-- another transaction holds: their messages are left for a later claim (a reservation of
-- this process on one is given back), so the transaction never waits for a workflow
-- after its first statement and cannot close a deadlock with a transaction that waits
-- for one of the workflows it locked before. Each row ends with its workflow's version
-- (NULL: the workflow is gone; such a message is taken, and the caller deletes it).
-- (now, now, wake-up owner, limit, wake-up owner, owner, lease_until).
WITH ready AS MATERIALIZED (
    SELECT id, workflow_id, lease_owner
    FROM queue_messages
    WHERE deliver_at <= %s AND (lease_until IS NULL OR lease_until < %s OR lease_owner = %s)
    ORDER BY deliver_at, id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
), free AS MATERIALIZED (
    SELECT id, version FROM workflows
    WHERE id IN (SELECT workflow_id FROM ready)
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), taken AS MATERIALIZED (
    SELECT ready.id, free.version FROM ready LEFT JOIN free ON free.id = ready.workflow_id
    WHERE free.id IS NOT NULL
       OR NOT EXISTS (SELECT 1 FROM workflows w WHERE w.id = ready.workflow_id)
), given_back AS (
    UPDATE queue_messages AS q SET lease_owner = NULL, lease_until = NULL
    FROM ready
    WHERE q.id = ready.id AND ready.lease_owner = %s
      AND ready.id NOT IN (SELECT id FROM taken)
)
UPDATE queue_messages AS q
SET lease_owner = %s, lease_token = q.lease_token + 1, lease_until = %s,
    attempts = q.attempts + 1
FROM taken
WHERE q.id = taken.id
RETURNING q.id, q.workflow_id, q.kind, q.stage_id, q.task_id, q.payload, q.attempts,
          q.lease_token, q.deliver_at, taken.version;

-- name: reserve_for_wake_up
-- A woken idle worker leases the first due message that has no lease to its process's
-- wake-up owner for a moment (see _waiting.py). Returns (reserved: 0 or 1, the earliest
-- delivery of a message without a lease, the earliest end of a lease, in epoch ms):
-- (now, wake-up owner, until).
WITH ready AS (
    SELECT id
    FROM queue_messages
    WHERE deliver_at <= %s AND lease_until IS NULL
    ORDER BY deliver_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), reserved AS (
    UPDATE queue_messages AS q
    SET lease_owner = %s, lease_token = q.lease_token + 1, lease_until = %s
    FROM ready
    WHERE q.id = ready.id
    RETURNING q.id
)
SELECT (SELECT count(*) FROM reserved),
       min(deliver_at) FILTER (WHERE lease_until IS NULL),
       min(GREATEST(deliver_at, lease_until + 1)) FILTER (WHERE lease_until IS NOT NULL)
FROM queue_messages;

-- name: release_wake_up_reservations
-- Give back the reservations of a wake-up owner (its backend closes) and wake the other
-- idle workers if there were any: (owner).
WITH released AS (
    UPDATE queue_messages SET lease_owner = NULL, lease_until = NULL
    WHERE lease_owner = %s
    RETURNING id
)
SELECT pg_notify('{channel}', '') FROM (SELECT 1 FROM released LIMIT 1) AS freed;

-- name: extend_leases
-- Several leases of one owner in one statement; returns the ids still held.
UPDATE queue_messages AS q
SET lease_until = %s
FROM unnest(%s::bigint[], %s::bigint[]) AS l (id, token)
WHERE q.id = l.id AND q.lease_token = l.token AND q.lease_owner = %s
RETURNING q.id;

-- name: drop_workflow_messages
DELETE FROM queue_messages WHERE workflow_id = %s;

-- name: extend_lease
UPDATE queue_messages SET lease_until = %s WHERE id = %s AND lease_token = %s AND lease_owner = %s;

-- name: lease_owners
SELECT DISTINCT lease_owner FROM queue_messages WHERE lease_owner IS NOT NULL AND lease_until >= %s;

-- name: release_owner
UPDATE queue_messages SET lease_until = NULL WHERE lease_owner = %s;

-- name: dead_letter
INSERT INTO dead_letters (id, workflow_id, kind, stage_id, task_id, payload, attempts, reason, created_at)
SELECT id, workflow_id, kind, stage_id, task_id, payload, attempts, %s, %s FROM queue_messages WHERE id = %s;

-- name: queue_depth
SELECT count(*), min(deliver_at) FROM queue_messages;

-- name: count_ready
SELECT count(*) FROM queue_messages WHERE deliver_at <= %s AND (lease_until IS NULL OR lease_until < %s);

-- name: workflow_exists
SELECT 1 FROM workflows WHERE id = %s;

-- name: delete_workflow
DELETE FROM workflows WHERE id = %s;

-- name: mutex_holder
-- Locks the holder row, so that a concurrent release waits for this transaction and
-- then sees the waiter it may have added.
SELECT workflow_id, stage_id FROM mutex_holders WHERE key = %s FOR UPDATE;

-- name: mutex_try
INSERT INTO mutex_holders (key, workflow_id, stage_id, acquired_at) VALUES (%s, %s, %s, %s)
ON CONFLICT (key) DO NOTHING;

-- name: mutex_wait
INSERT INTO mutex_waiters (key, workflow_id, stage_id, created_at) VALUES (%s, %s, %s, %s);

-- name: mutex_release
DELETE FROM mutex_holders WHERE key = %s AND stage_id = %s;

-- name: mutex_next_waiter
SELECT id, workflow_id, stage_id FROM mutex_waiters WHERE key = %s ORDER BY id LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: mutex_forget_waiter
DELETE FROM mutex_waiters WHERE id = %s;

-- name: drop_stage_messages
DELETE FROM queue_messages WHERE workflow_id = %s AND stage_id = %s AND kind = %s;

-- name: drop_workflow_mutex_waiters
DELETE FROM mutex_waiters WHERE workflow_id = %s;

-- name: events_table_exists
-- The engine's own events table of this schema (search_path names it).
SELECT 1 WHERE to_regclass('events') IS NOT NULL;

-- name: delete_workflow_events
DELETE FROM events WHERE workflow_id = %s;

-- name: workflow_has_messages
-- Any message of the workflow, due or not, leased or not (WorkflowRecovery).
SELECT 1 FROM queue_messages WHERE workflow_id = %s LIMIT 1;

-- name: purge_batch
-- Completed workflows to purge, oldest first (WorkflowStore.purge puts its WHERE clause
-- after the table name).
-- Rows other transactions hold are skipped, not waited for, so workers keep running.
SELECT id FROM workflows{where} ORDER BY updated_at, id LIMIT %s FOR UPDATE SKIP LOCKED;

-- name: events_head
-- The newest rows of the log: their time and how many there are (through events_by_time).
SELECT timestamp, count(*) FROM events
WHERE timestamp = (SELECT max(timestamp) FROM events) GROUP BY timestamp;

-- name: select_events
-- The rows of one workflow from the one holding sequence since + 1 on, in order:
-- (workflow_id, workflow_id, since + 1); both reads are ranges of the primary key.
SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence
FROM events WHERE workflow_id = %s AND sequence >= COALESCE(
    (SELECT max(sequence) FROM events WHERE workflow_id = %s AND sequence <= %s), 0)
ORDER BY sequence;

-- name: select_events_limit
-- select_events, at most a number of rows: (workflow_id, workflow_id, since + 1, limit).
SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence
FROM events WHERE workflow_id = %s AND sequence >= COALESCE(
    (SELECT max(sequence) FROM events WHERE workflow_id = %s AND sequence <= %s), 0)
ORDER BY sequence LIMIT %s;

-- name: recent_heads
-- Workflows with events at or after a time, and the last sequence of each: (since_ms),
-- through the events_by_time index.
SELECT workflow_id, max(COALESCE(last_sequence, sequence)) FROM events
WHERE timestamp >= %s
GROUP BY workflow_id;

-- name: recent_heads_of_application
-- recent_heads of one application's workflows: (since_ms, application).
SELECT workflow_id, max(COALESCE(last_sequence, sequence)) FROM events
WHERE timestamp >= %s AND workflow_id IN (SELECT id FROM workflows WHERE application = %s)
GROUP BY workflow_id;

-- name: count_events
-- The number of events (not rows) in the log.
SELECT COALESCE(sum(COALESCE(last_sequence, sequence) - sequence + 1), 0) FROM events;
