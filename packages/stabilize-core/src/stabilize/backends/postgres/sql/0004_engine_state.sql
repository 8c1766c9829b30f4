-- stabilize PostgreSQL schema, version 4: the engine's bookkeeping leaves the stage context.
--
-- Earlier versions kept it in each stage body's context under private keys; it now lives
-- in typed fields of the stage and in the state of its tasks. This moves the keys of the
-- stored stage bodies by the rules of stabilize.models._legacy.upgrade_stage_row, which
-- reads rows of the old form wherever they still appear (an event log recorded before
-- this migration, say). Change both together.
--
-- body is JSON text; it is read as jsonb here. A body jsonb cannot hold (a string with
-- \u0000) is left as it is: upgrade_stage_row reads it, and its next write is in the new
-- form.

DO $$
DECLARE
    old_task_keys CONSTANT text[] :=
        ARRAY['_agent', '_wait_until', '_llm_retry', '_loop_iteration', '_loop_carry'];
    loop_keys CONSTANT text[] := ARRAY['_loop_mode', '_loop_condition',
        '_loop_max_iterations', '_loop_target', '_loop_fail_when_exhausted'];
    field_keys CONSTANT text[] := ARRAY['_jump_count', '_signal_user', '_mi_generation',
        '_mi_index'];
    r record;
    b jsonb;
    ctx jsonb;
    tasks jsonb;
    st jsonb;
    kept jsonb;
    agent jsonb;
    idx integer;
    k text;
    flag jsonb;
BEGIN
    FOR r IN
        SELECT id, body FROM stages
        WHERE strpos(body, '\u0000') = 0 AND (
            strpos(body, '"_jump_count"') > 0 OR strpos(body, '"_signal_user"') > 0
            OR strpos(body, '"_mi_generation"') > 0 OR strpos(body, '"_mi_index"') > 0
            OR strpos(body, '"_loop_') > 0 OR strpos(body, '"_signal_timeout_seconds"') > 0
            OR strpos(body, '"_agent"') > 0 OR strpos(body, '"_wait_until"') > 0
            OR strpos(body, '"_llm_retry"') > 0)
    LOOP
        b := r.body::jsonb;
        ctx := b -> 'context';
        CONTINUE WHEN jsonb_typeof(ctx) IS DISTINCT FROM 'object';
        CONTINUE WHEN NOT (ctx ?| field_keys OR ctx ?| loop_keys OR ctx ?| old_task_keys
                           OR ctx ? '_signal_timeout_seconds');

        -- The stage's own fields (at their defaults, to_row leaves them out).
        IF ctx ? '_jump_count' THEN
            IF coalesce(b -> 'jump_count', '0') IN ('0', 'null')
               AND jsonb_typeof(ctx -> '_jump_count') = 'number'
               AND (ctx ->> '_jump_count')::numeric::bigint <> 0 THEN
                b := jsonb_set(b, '{jump_count}',
                               to_jsonb((ctx ->> '_jump_count')::numeric::bigint));
            END IF;
        END IF;
        FOREACH k IN ARRAY ARRAY['_signal_user', '_mi_generation', '_mi_index'] LOOP
            IF ctx ? k AND ctx -> k <> 'null'
               AND coalesce(b -> substr(k, 2), 'null') = 'null' THEN
                b := jsonb_set(b, ARRAY[substr(k, 2)], ctx -> k);
            END IF;
        END LOOP;
        ctx := ctx - field_keys;

        -- A loop's check stage: its five settings become the field loop.
        IF ctx ? '_loop_target' AND coalesce(b -> 'loop', 'null') = 'null' THEN
            flag := ctx -> '_loop_fail_when_exhausted';
            b := jsonb_set(b, '{loop}', jsonb_build_object(
                'mode', coalesce(nullif(ctx -> '_loop_mode', 'null'), '"until"'),
                'condition', coalesce(nullif(ctx -> '_loop_condition', 'null'), '""'),
                'max_iterations', coalesce(nullif(ctx -> '_loop_max_iterations', 'null'), '1'),
                'target', ctx -> '_loop_target',
                'fail_when_exhausted', flag IS NOT NULL AND (flag = 'true' OR (
                    jsonb_typeof(flag) = 'number' AND (flag #>> '{}')::numeric <> 0))));
        END IF;
        ctx := ctx - loop_keys;

        -- A suspension's timer: the engine read it from the task's result only.
        ctx := ctx - '_signal_timeout_seconds';

        -- What a task kept between its executions: the state of the stage's last task
        -- that started (its first task when none did).
        tasks := b -> 'tasks';
        IF jsonb_typeof(tasks) = 'array' AND jsonb_array_length(tasks) > 0
           AND ctx ?| old_task_keys THEN
            SELECT coalesce(max(t.ord) - 1, 0) INTO idx
            FROM jsonb_array_elements(tasks) WITH ORDINALITY AS t(v, ord)
            WHERE (t.v ->> 'status') IS DISTINCT FROM 'NOT_STARTED';
            st := '{}';
            agent := ctx -> '_agent';
            IF jsonb_typeof(agent) = 'object' THEN
                -- Only the step count of a checkpoint of an earlier run of the stage.
                IF coalesce(agent -> 'run_started', 'null') = 'null'
                   OR agent -> 'run_started' = b -> 'start_time' THEN
                    st := agent - 'run_started';
                END IF;
                st := jsonb_set(st, '{kept}', jsonb_build_object(
                    'step', coalesce(nullif(agent -> 'step', 'null'), '0')));
            END IF;
            IF ctx ? '_wait_until' THEN
                st := jsonb_set(st, '{until}', ctx -> '_wait_until');
            END IF;
            IF ctx ? '_llm_retry' THEN
                st := jsonb_set(st, '{llm_retry}', ctx -> '_llm_retry');
            END IF;
            IF ctx ? '_loop_iteration' OR ctx ? '_loop_carry' THEN
                kept := coalesce(st -> 'kept', '{}');
                IF ctx ? '_loop_iteration' THEN
                    kept := jsonb_set(kept, '{iteration}', ctx -> '_loop_iteration');
                END IF;
                IF ctx ? '_loop_carry' THEN
                    kept := jsonb_set(kept, '{carry}', ctx -> '_loop_carry');
                END IF;
                st := jsonb_set(st, '{kept}', kept);
            END IF;
            ctx := ctx - old_task_keys;
            IF coalesce(tasks -> idx -> 'state', '{}') IN ('{}', 'null') THEN
                tasks := jsonb_set(tasks, ARRAY[idx::text],
                                   (tasks -> idx) || jsonb_build_object('state', st));
                b := jsonb_set(b, '{tasks}', tasks);
            END IF;
        END IF;

        b := jsonb_set(b, '{context}', ctx);
        UPDATE stages SET body = b::text WHERE id = r.id;
    END LOOP;
END
$$;
