-- Named queries of the SQLite backend. Parameters are positional (?).

-- name: workflow_version
SELECT version FROM workflows WHERE id = ?;

-- name: load_workflow
SELECT body, version, event_seq FROM workflows WHERE id = ?;

-- name: load_stages
SELECT body FROM stages WHERE workflow_id = ? ORDER BY position;

-- name: load_stage
SELECT body FROM stages WHERE id = ?;

-- name: insert_workflow
INSERT INTO workflows (id, application, name, status, created_at, updated_at, version, event_seq, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: insert_stage
INSERT INTO stages (id, workflow_id, position, ref_id, status, body) VALUES (?, ?, ?, ?, ?, ?);

-- name: update_workflow
UPDATE workflows SET status = ?, body = ?, version = ?, updated_at = ?, event_seq = ? WHERE id = ?;

-- name: bump_workflow
UPDATE workflows SET version = ?, updated_at = ?, event_seq = ? WHERE id = ?;

-- name: update_stage
UPDATE stages SET status = ?, body = ? WHERE id = ?;

-- name: enqueue
INSERT INTO queue_messages
    (workflow_id, kind, stage_id, task_id, payload, deliver_at, attempts, lease_owner, lease_token,
     lease_until, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
RETURNING id;

-- name: ack
DELETE FROM queue_messages WHERE id = ? AND lease_token = ? AND lease_owner = ?;

-- name: enqueue_as
-- enqueue under the id of a message acknowledged in the same transaction (see
-- Transaction.ack): an id below the AUTOINCREMENT counter leaves the counter as it is.
INSERT INTO queue_messages
    (id, workflow_id, kind, stage_id, task_id, payload, deliver_at, attempts, lease_owner,
     lease_token, lease_until, created_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: delete_message
DELETE FROM queue_messages WHERE id = ?;

-- name: claim
-- Select and lease in one statement (the transaction holds the write lock: nothing moves
-- in between). RETURNING gives the rows in no set order; the caller orders them by
-- (deliver_at, id), the order they were picked in. (owner, lease_until, now, now, limit).
UPDATE queue_messages
SET lease_owner = ?, lease_token = lease_token + 1, lease_until = ?, attempts = attempts + 1
WHERE id IN (
    SELECT id FROM queue_messages
    WHERE deliver_at <= ? AND (lease_until IS NULL OR lease_until < ?)
    ORDER BY deliver_at, id
    LIMIT ?
)
RETURNING id, workflow_id, kind, stage_id, task_id, payload, attempts, lease_token, deliver_at;

-- name: drop_workflow_messages
DELETE FROM queue_messages WHERE workflow_id = ?;

-- name: extend_lease
UPDATE queue_messages SET lease_until = ? WHERE id = ? AND lease_token = ? AND lease_owner = ?;

-- name: lease_owners
SELECT DISTINCT lease_owner FROM queue_messages WHERE lease_owner IS NOT NULL AND lease_until >= ?;

-- name: release_owner
UPDATE queue_messages SET lease_until = NULL WHERE lease_owner = ?;

-- name: dead_letter
INSERT INTO dead_letters (id, workflow_id, kind, stage_id, task_id, payload, attempts, reason, created_at)
SELECT id, workflow_id, kind, stage_id, task_id, payload, attempts, ?, ? FROM queue_messages WHERE id = ?;

-- name: queue_depth
SELECT count(*), min(deliver_at) FROM queue_messages;

-- name: count_ready
SELECT count(*) FROM queue_messages WHERE deliver_at <= ? AND (lease_until IS NULL OR lease_until < ?);

-- name: workflow_exists
SELECT 1 FROM workflows WHERE id = ?;

-- name: insert_event
-- The rowid holds the time: at least timestamp << 16, above every earlier row (see 0003).
INSERT INTO {ev}events
(rowid, workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence)
VALUES (
    max(?6 << 16, (SELECT coalesce(max(rowid), 0) + 1 FROM {ev}events)),
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8
);

-- name: delete_workflow
DELETE FROM workflows WHERE id = ?;

-- name: mutex_holder
SELECT workflow_id, stage_id FROM mutex_holders WHERE key = ?;

-- name: mutex_try
INSERT INTO mutex_holders (key, workflow_id, stage_id, acquired_at) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO NOTHING;

-- name: mutex_wait
INSERT INTO mutex_waiters (key, workflow_id, stage_id, created_at) VALUES (?, ?, ?, ?);

-- name: mutex_release
DELETE FROM mutex_holders WHERE key = ? AND stage_id = ?;

-- name: mutex_next_waiter
SELECT id, workflow_id, stage_id FROM mutex_waiters WHERE key = ? ORDER BY id LIMIT 1;

-- name: mutex_forget_waiter
DELETE FROM mutex_waiters WHERE id = ?;

-- name: drop_stage_messages
DELETE FROM queue_messages WHERE workflow_id = ? AND stage_id = ? AND kind = ?;

-- name: drop_workflow_mutex_waiters
DELETE FROM mutex_waiters WHERE workflow_id = ?;

-- name: events_table_exists
-- The engine's own events table of this file (absent until an event store created it).
SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events';

-- name: delete_workflow_events
DELETE FROM events WHERE workflow_id = ?;

-- name: workflow_has_messages
-- Any message of the workflow, due or not, leased or not (WorkflowRecovery).
SELECT 1 FROM queue_messages WHERE workflow_id = ? LIMIT 1;

-- name: purge_batch
-- Completed workflows to purge, oldest first (WorkflowStore.purge puts its WHERE clause
-- after the table name).
SELECT id FROM workflows{where} ORDER BY updated_at, id LIMIT ?;

-- name: events_head
-- The newest row of the log: rowids grow with time (see 0003), so the largest one.
SELECT max(rowid) FROM events;

-- name: select_events
-- The rows of one workflow from the one holding sequence since + 1 on, in order:
-- (workflow_id, workflow_id, since + 1); both reads are ranges of the primary key.
SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence
FROM events WHERE workflow_id = ? AND sequence >= COALESCE(
    (SELECT max(sequence) FROM events WHERE workflow_id = ? AND sequence <= ?), 0)
ORDER BY sequence;

-- name: select_events_limit
-- select_events, at most a number of rows: (workflow_id, workflow_id, since + 1, limit).
SELECT workflow_id, sequence, event_type, entity_type, entity_id, timestamp, data, last_sequence
FROM events WHERE workflow_id = ? AND sequence >= COALESCE(
    (SELECT max(sequence) FROM events WHERE workflow_id = ? AND sequence <= ?), 0)
ORDER BY sequence LIMIT ?;

-- name: recent_heads
-- Workflows with events at or after a time, and the last sequence of each:
-- (since_ms << 16, since_ms). Rowids hold the time (see 0003): a range of them replaces an
-- index on the time. NOT INDEXED: left to itself SQLite scans the whole (workflow_id,
-- sequence) index for the GROUP BY instead of reading the range of recent rowids.
SELECT workflow_id, max(COALESCE(last_sequence, sequence)) FROM events NOT INDEXED
WHERE rowid >= ? AND timestamp >= ?
GROUP BY workflow_id;

-- name: recent_heads_of_application
-- recent_heads of one application's workflows: (since_ms << 16, since_ms, application).
SELECT workflow_id, max(COALESCE(last_sequence, sequence)) FROM events NOT INDEXED
WHERE rowid >= ? AND timestamp >= ?
    AND workflow_id IN (SELECT id FROM workflows WHERE application = ?)
GROUP BY workflow_id;

-- name: count_events
-- The number of events (not rows) in the log.
SELECT COALESCE(sum(COALESCE(last_sequence, sequence) - sequence + 1), 0) FROM events;
