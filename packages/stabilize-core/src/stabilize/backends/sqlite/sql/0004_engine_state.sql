-- stabilize SQLite schema, version 4: the engine's bookkeeping leaves the stage context.
--
-- Earlier versions kept it in each stage body's context under private keys; it now lives
-- in typed fields of the stage and in the state of its tasks. This moves the keys of the
-- stored stage bodies by the rules of stabilize.models._legacy.upgrade_stage_row, which
-- reads rows of the old form wherever they still appear (an event log recorded before
-- this migration, say). Change both together.
--
-- The state of a task goes to the stage's last task that started (its first task when
-- none did).

UPDATE stages SET body = json_remove(
    CASE WHEN coalesce(json_extract(body, '$.jump_count'), 0) = 0
              AND CAST(json_extract(body, '$.context._jump_count') AS INTEGER) <> 0
         THEN json_set(body, '$.jump_count',
                       CAST(json_extract(body, '$.context._jump_count') AS INTEGER))
         ELSE body END,
    '$.context._jump_count')
WHERE json_type(body, '$.context._jump_count') IS NOT NULL;

UPDATE stages SET body = json_remove(
    CASE WHEN json_extract(body, '$.signal_user') IS NULL
              AND json_extract(body, '$.context._signal_user') IS NOT NULL
         THEN json_set(body, '$.signal_user', json_extract(body, '$.context._signal_user'))
         ELSE body END,
    '$.context._signal_user')
WHERE json_type(body, '$.context._signal_user') IS NOT NULL;

UPDATE stages SET body = json_remove(
    CASE WHEN json_extract(body, '$.mi_generation') IS NULL
              AND json_extract(body, '$.context._mi_generation') IS NOT NULL
         THEN json_set(body, '$.mi_generation', json_extract(body, '$.context._mi_generation'))
         ELSE body END,
    '$.context._mi_generation')
WHERE json_type(body, '$.context._mi_generation') IS NOT NULL;

UPDATE stages SET body = json_remove(
    CASE WHEN json_extract(body, '$.mi_index') IS NULL
              AND json_extract(body, '$.context._mi_index') IS NOT NULL
         THEN json_set(body, '$.mi_index', json_extract(body, '$.context._mi_index'))
         ELSE body END,
    '$.context._mi_index')
WHERE json_type(body, '$.context._mi_index') IS NOT NULL;

-- A loop's check stage: its five settings become the field loop.
UPDATE stages SET body = json_remove(
    CASE WHEN json_type(body, '$.context._loop_target') IS NOT NULL
              AND json_extract(body, '$.loop') IS NULL
         THEN json_set(body, '$.loop', json_object(
             'mode', coalesce(json_extract(body, '$.context._loop_mode'), 'until'),
             'condition', coalesce(json_extract(body, '$.context._loop_condition'), ''),
             'max_iterations', coalesce(json_extract(body, '$.context._loop_max_iterations'), 1),
             'target', json_extract(body, '$.context._loop_target'),
             'fail_when_exhausted',
             json(CASE WHEN json_extract(body, '$.context._loop_fail_when_exhausted')
                       THEN 'true' ELSE 'false' END)))
         ELSE body END,
    '$.context._loop_mode', '$.context._loop_condition', '$.context._loop_max_iterations',
    '$.context._loop_target', '$.context._loop_fail_when_exhausted')
WHERE json_type(body, '$.context._loop_mode') IS NOT NULL
   OR json_type(body, '$.context._loop_condition') IS NOT NULL
   OR json_type(body, '$.context._loop_max_iterations') IS NOT NULL
   OR json_type(body, '$.context._loop_target') IS NOT NULL
   OR json_type(body, '$.context._loop_fail_when_exhausted') IS NOT NULL;

-- A suspension's timer: the engine read it from the task's result only.
UPDATE stages SET body = json_remove(body, '$.context._signal_timeout_seconds')
WHERE json_type(body, '$.context._signal_timeout_seconds') IS NOT NULL;

-- An agent's checkpoint becomes the state of its task, with its step count kept; only the
-- step count when the checkpoint is of an earlier run of the stage (run_started).
UPDATE stages SET body = json_remove(json_set(body,
    '$.tasks[' || (
        SELECT coalesce(max(CAST(t.key AS INTEGER)), 0) FROM json_each(stages.body, '$.tasks') AS t
        WHERE coalesce(json_extract(t.value, '$.status'), '') <> 'NOT_STARTED'
    ) || '].state',
    CASE WHEN json_extract(body, '$.context._agent.run_started') IS NULL
              OR json_extract(body, '$.context._agent.run_started')
                 = json_extract(body, '$.start_time')
         THEN json_set(json_remove(json_extract(body, '$.context._agent'), '$.run_started'),
                       '$.kept',
                       json_object('step',
                                   coalesce(json_extract(body, '$.context._agent.step'), 0)))
         ELSE json_object('kept', json_object('step',
                          coalesce(json_extract(body, '$.context._agent.step'), 0)))
         END),
    '$.context._agent')
WHERE json_type(body, '$.context._agent') = 'object'
  AND json_array_length(body, '$.tasks') > 0;

UPDATE stages SET body = json_remove(body, '$.context._agent')
WHERE json_type(body, '$.context._agent') IS NOT NULL
  AND json_array_length(body, '$.tasks') > 0;

-- A wait's deadline.
UPDATE stages SET body = json_remove(json_set(body,
    '$.tasks[' || (
        SELECT coalesce(max(CAST(t.key AS INTEGER)), 0) FROM json_each(stages.body, '$.tasks') AS t
        WHERE coalesce(json_extract(t.value, '$.status'), '') <> 'NOT_STARTED'
    ) || '].state.until',
    json_extract(body, '$.context._wait_until')),
    '$.context._wait_until')
WHERE json_type(body, '$.context._wait_until') IS NOT NULL
  AND json_array_length(body, '$.tasks') > 0;

-- The retries of an LLM call.
UPDATE stages SET body = json_remove(json_set(body,
    '$.tasks[' || (
        SELECT coalesce(max(CAST(t.key AS INTEGER)), 0) FROM json_each(stages.body, '$.tasks') AS t
        WHERE coalesce(json_extract(t.value, '$.status'), '') <> 'NOT_STARTED'
    ) || '].state.llm_retry',
    json_extract(body, '$.context._llm_retry')),
    '$.context._llm_retry')
WHERE json_type(body, '$.context._llm_retry') IS NOT NULL
  AND json_array_length(body, '$.tasks') > 0;

-- A while loop's guard: the iteration and what the last one produced, kept across resets.
UPDATE stages SET body = json_remove(json_set(body,
    '$.tasks[' || (
        SELECT coalesce(max(CAST(t.key AS INTEGER)), 0) FROM json_each(stages.body, '$.tasks') AS t
        WHERE coalesce(json_extract(t.value, '$.status'), '') <> 'NOT_STARTED'
    ) || '].state.kept.iteration',
    json_extract(body, '$.context._loop_iteration')),
    '$.context._loop_iteration')
WHERE json_type(body, '$.context._loop_iteration') IS NOT NULL
  AND json_array_length(body, '$.tasks') > 0;

UPDATE stages SET body = json_remove(json_set(body,
    '$.tasks[' || (
        SELECT coalesce(max(CAST(t.key AS INTEGER)), 0) FROM json_each(stages.body, '$.tasks') AS t
        WHERE coalesce(json_extract(t.value, '$.status'), '') <> 'NOT_STARTED'
    ) || '].state.kept.carry',
    json_extract(body, '$.context._loop_carry')),
    '$.context._loop_carry')
WHERE json_type(body, '$.context._loop_carry') IS NOT NULL
  AND json_array_length(body, '$.tasks') > 0;
