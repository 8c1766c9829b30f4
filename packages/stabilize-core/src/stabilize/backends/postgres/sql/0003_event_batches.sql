-- stabilize PostgreSQL schema, version 3: one row of the event log per transition.
--
-- A row holds the events of one transition of one workflow: sequence .. last_sequence.
-- A row with last_sequence NULL is one event (event_type, entity_type, entity_id, data);
-- a row with last_sequence set has event_type '*' and data is a JSON array of
-- [event_type, entity_type, entity_id, data] for each of its events, in sequence order.

ALTER TABLE events ADD COLUMN IF NOT EXISTS last_sequence BIGINT;
