-- Change capture's logs (`hospitaldb changes install`, incremental/capture.sql): which keys of the
-- steps' source tables changed since each step last took them, and which sources were truncated.
-- Owned by the NOLOGIN owner; written only by the capture triggers' function (SECURITY DEFINER,
-- pinned search_path), so a loader needs no grant here; taken by the refresher only through
-- etl_changes.take_changed_keys, inside its step's transaction: a step that rolls back leaves the
-- keys for the next run. Idempotent: applied again by every install.
CREATE SCHEMA IF NOT EXISTS etl_changes;

-- What is captured: a source, the key columns its triggers log, and the table they log into
-- (etl_changes.<log_table>: change_id and those columns, typed as in the source, no index but a
-- BRIN on change_id: each changed row costs its loader one narrow heap row, about 3 % of an insert).
CREATE TABLE IF NOT EXISTS etl_changes.captured (
    source       text        PRIMARY KEY,
    keys         text[]      NOT NULL,
    log_table    text        NOT NULL UNIQUE,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- Columns whose changes are summed (capture.sql's third column): their log rows also carry the
-- row's side, +1 for a row as it is now and -1 for a row as it was, and those columns' values, so
-- a step moves a group's counts and sums by what changed in it (engine: pg_temp.changed_<table>'s
-- row_change and <column>_change).
ALTER TABLE etl_changes.captured ADD COLUMN IF NOT EXISTS sums text[] NOT NULL DEFAULT '{}';

-- One row per statement that changed a source; its rows' keys (old and new) are in the source's
-- log under the same change_id. Commit order is unknown: a step takes the changes it saw, by id
-- (etl_changes.taken), never a range, so a loader that commits while the step runs is seen by the
-- next run.
CREATE TABLE IF NOT EXISTS etl_changes.changes (
    change_id bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source    text        NOT NULL,
    logged_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS changes_source_idx ON etl_changes.changes (source, change_id);
-- A change whose keys are not known (a TRUNCATE; an install that starts or changes a source's
-- capture): each step that reads the source must run full before it may run incremental again.
-- A change like any other, taken by id: a step decides its mode in the snapshot it refreshes from.
ALTER TABLE etl_changes.changes ADD COLUMN IF NOT EXISTS whole boolean NOT NULL DEFAULT false;

-- When each step last ran full (mode auto runs full again after full_every_days).
CREATE TABLE IF NOT EXISTS etl_changes.full_refreshes (
    step         text        PRIMARY KEY,
    refreshed_at timestamptz NOT NULL
);

-- Which step took which change: a change waits for every step until each has taken it.
CREATE TABLE IF NOT EXISTS etl_changes.taken (
    step      text   NOT NULL,
    change_id bigint NOT NULL REFERENCES etl_changes.changes ON DELETE CASCADE,
    PRIMARY KEY (step, change_id)
);

-- A TRUNCATE logs no keys (nor does an install that changes a source's keys): the next run of the
-- steps that read the source must be full.
CREATE TABLE IF NOT EXISTS etl_changes.truncated (
    source       text        NOT NULL,
    truncated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, truncated_at)
);

-- The capture triggers' function: TG_ARGV is the log table, then the key columns, then the summed
-- columns, each written '+column'. A summed source logs each row with its side: an UPDATE's old row
-- at -1 and its new row at +1.
CREATE OR REPLACE FUNCTION etl_changes.log_changed_keys() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    keys text := (SELECT string_agg(format('t.%I', arg), ', ') FROM unnest(TG_ARGV[1:]) AS arg
                  WHERE left(arg, 1) <> '+');
    sums text := (SELECT string_agg(format(', t.%I', substr(arg, 2)), '') FROM unnest(TG_ARGV[1:]) AS arg
                  WHERE left(arg, 1) = '+');
    changed text := CASE TG_OP WHEN 'INSERT' THEN '(SELECT 1 AS row_side, * FROM new_rows)'
                               WHEN 'DELETE' THEN '(SELECT -1 AS row_side, * FROM old_rows)'
                               ELSE '(SELECT -1 AS row_side, * FROM old_rows '
                                    'UNION ALL SELECT 1, * FROM new_rows)' END;
    change bigint;
BEGIN
    INSERT INTO etl_changes.changes (source) VALUES (format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME))
    RETURNING change_id INTO change;
    IF sums IS NULL THEN
        EXECUTE format('INSERT INTO etl_changes.%I SELECT $1, %s FROM %s AS t', TG_ARGV[0], keys, changed)
            USING change;
    ELSE
        EXECUTE format('INSERT INTO etl_changes.%I SELECT $1, %s, t.row_side%s FROM %s AS t',
                       TG_ARGV[0], keys, sums, changed)
            USING change;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION etl_changes.mark_truncated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO etl_changes.truncated (source) VALUES (format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME))
    ON CONFLICT DO NOTHING;
    INSERT INTO etl_changes.changes (source, whole) VALUES (format('%I.%I', TG_TABLE_SCHEMA, TG_TABLE_NAME), true);
    RETURN NULL;
END $$;

-- Every key of source on record (taken by some step or not), each once, as a JSON object of its
-- key columns: what `hospitaldb changes status` counts.
CREATE OR REPLACE FUNCTION etl_changes.logged_keys(source_name text) RETURNS SETOF jsonb
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    log text := (SELECT c.log_table FROM etl_changes.captured AS c WHERE c.source = source_name);
BEGIN
    RETURN QUERY EXECUTE format('SELECT DISTINCT to_jsonb(l) - %L FROM etl_changes.%I AS l', 'change_id', log);
END $$;

-- The keys logged under change_ids for source, each once, as JSON objects of its key columns; for a
-- summed source, also the rows each key gained (row_change, below zero when it lost some) and what
-- each summed column gained, under the column's own name. Distinct on the key columns themselves,
-- then as JSON: distinct JSON costs eight times more. Called by the two functions below only.
CREATE OR REPLACE FUNCTION etl_changes.keys_of(source_name text, change_ids bigint[])
RETURNS SETOF jsonb LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    log text;
    key_columns text;
    sum_columns text[];
BEGIN
    SELECT c.log_table, (SELECT string_agg(format('l.%I', key), ', ') FROM unnest(c.keys) AS key), c.sums
    INTO log, key_columns, sum_columns FROM etl_changes.captured AS c WHERE c.source = source_name;
    RETURN QUERY EXECUTE format(
        'SELECT to_jsonb(k) FROM (SELECT %s%s FROM etl_changes.%I AS l WHERE l.change_id = ANY ($1) GROUP BY %s) AS k',
        key_columns,
        CASE WHEN cardinality(sum_columns) > 0 THEN ', sum(l.row_side) AS row_change' END
        || (SELECT string_agg(format(', sum(l.row_side * l.%I) AS %I', summed, summed), '')
            FROM unnest(sum_columns) AS summed),
        log,
        key_columns)
        USING change_ids;
END $$;

-- The keys of source that step has not taken yet, taken now, each once: in the caller's
-- transaction, so a step that rolls back leaves them. Changes still uncommitted are not seen,
-- and wait.
CREATE OR REPLACE FUNCTION etl_changes.take_changed_keys(step_name text, source_name text)
RETURNS SETOF jsonb LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    fresh bigint[];
BEGIN
    SELECT coalesce(array_agg(c.change_id), '{}') INTO fresh FROM etl_changes.changes AS c
    WHERE c.source = source_name
      AND NOT EXISTS (SELECT FROM etl_changes.taken AS t WHERE t.step = step_name AND t.change_id = c.change_id);
    INSERT INTO etl_changes.taken (step, change_id) SELECT step_name, unnest(fresh);
    RETURN QUERY SELECT k FROM etl_changes.keys_of(source_name, fresh) AS k;
END $$;

-- What waits for step in each of sources (as the catalog quotes them): whether the source is
-- captured and by which key columns, whether a change of unknown keys waits (the step must run full), and how many keys
-- (each once, as take_changed_keys would take them).
-- Read in the step's own snapshot: what it decides is what it then takes.
CREATE OR REPLACE FUNCTION etl_changes.pending_changes(step_name text, sources text[])
RETURNS TABLE (source text, captured boolean, keys text[], whole boolean, changed_keys bigint)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    wanted text;
    log text;
    fresh bigint[];
BEGIN
    FOREACH wanted IN ARRAY sources LOOP
        source := wanted;
        SELECT c.log_table, c.keys INTO log, keys FROM etl_changes.captured AS c WHERE c.source = wanted;
        captured := log IS NOT NULL;
        SELECT coalesce(array_agg(c.change_id), '{}'), coalesce(bool_or(c.whole), false) INTO fresh, whole
        FROM etl_changes.changes AS c
        WHERE c.source = wanted
          AND NOT EXISTS (SELECT FROM etl_changes.taken AS t WHERE t.step = step_name AND t.change_id = c.change_id);
        changed_keys := 0;
        IF captured AND cardinality(fresh) > 0 THEN
            EXECUTE format('SELECT count(*) FROM (SELECT DISTINCT %s FROM etl_changes.%I AS l '
                           'WHERE l.change_id = ANY ($1)) AS k',
                           (SELECT string_agg(format('l.%I', key), ', ') FROM unnest(keys) AS key), log)
                INTO changed_keys USING fresh;
        END IF;
        RETURN NEXT;
    END LOOP;
END $$;

-- What this transaction logged so far of a summed source, taking nothing: per key, the rows gained
-- and what each summed column gained, as take_changed_keys gives them. A check of what changed
-- holds it against what the step took of its own sources: tonight's change in analytics equals
-- tonight's change in the reporting table the step wrote from it (a control total).
CREATE OR REPLACE FUNCTION etl_changes.logged_here(source_name text) RETURNS SETOF jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    here bigint[];
BEGIN
    IF NOT EXISTS (SELECT FROM etl_changes.captured AS c WHERE c.source = source_name AND cardinality(c.sums) > 0) THEN
        RETURN;
    END IF;
    SELECT coalesce(array_agg(c.change_id), '{}') INTO here FROM etl_changes.changes AS c
    WHERE c.source = source_name AND c.xmin = pg_current_xact_id()::xid;
    RETURN QUERY SELECT k FROM etl_changes.keys_of(source_name, here) AS k;
END $$;

-- What is installed for each of sources (as the catalog quotes them): its key and summed columns;
-- no row for one not captured. The engine compares them with capture.sql before a step runs
-- incrementally: a capture.sql changed since the last install waits for `hospitaldb changes install`.
CREATE OR REPLACE FUNCTION etl_changes.capture_of(sources text[])
RETURNS TABLE (source text, keys text[], sums text[])
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT c.source, c.keys, c.sums FROM etl_changes.captured AS c WHERE c.source = ANY (sources)
$$;

-- When step last ran full; NULL: never since capture was installed.
CREATE OR REPLACE FUNCTION etl_changes.last_full_refresh(step_name text) RETURNS timestamptz
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT f.refreshed_at FROM etl_changes.full_refreshes AS f WHERE f.step = step_name
$$;

-- Every change step has not taken, of any source, taken now: what a full run read, or (after an
-- incremental step took its own sources' keys) what it does not read. Every step that refreshes
-- incrementally takes every change, so etl_changes.trim_taken can forget a change once all those
-- steps have it. is_full: a full run, on record for full_every_days. In the caller's transaction: a
-- step that rolls back takes nothing. How many changes.
CREATE OR REPLACE FUNCTION etl_changes.take_all_changes(step_name text, is_full boolean) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    taken_count bigint;
BEGIN
    INSERT INTO etl_changes.taken (step, change_id)
    SELECT step_name, c.change_id FROM etl_changes.changes AS c
    WHERE NOT EXISTS (SELECT FROM etl_changes.taken AS t WHERE t.step = step_name AND t.change_id = c.change_id);
    GET DIAGNOSTICS taken_count = ROW_COUNT;
    IF is_full THEN
        INSERT INTO etl_changes.full_refreshes (step, refreshed_at) VALUES (step_name, now())
        ON CONFLICT (step) DO UPDATE SET refreshed_at = excluded.refreshed_at;
    END IF;
    RETURN taken_count;
END $$;

-- Changes every step that reads their source has taken are gone for good: trimmed, with their keys.
-- readers pairs each source (sources[i]) with a step that reads it (steps[i]); a source no step
-- reads needs no one. How many. (1.8.0's trim_taken(steps text[]) waited for every step.)
DROP FUNCTION IF EXISTS etl_changes.trim_taken(text[]);
CREATE OR REPLACE FUNCTION etl_changes.trim_taken(sources text[], steps text[]) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    done bigint[];
    captured record;
BEGIN
    SELECT coalesce(array_agg(c.change_id), '{}') INTO done FROM etl_changes.changes AS c
    WHERE NOT EXISTS (
        SELECT FROM unnest(sources, steps) AS r (source, step)
        WHERE r.source = c.source
          AND NOT EXISTS (SELECT FROM etl_changes.taken AS t WHERE t.change_id = c.change_id AND t.step = r.step)
    );
    FOR captured IN SELECT log_table FROM etl_changes.captured LOOP
        EXECUTE format('DELETE FROM etl_changes.%I WHERE change_id = ANY ($1)', captured.log_table) USING done;
    END LOOP;
    DELETE FROM etl_changes.changes WHERE change_id = ANY (done);
    RETURN cardinality(done);
END $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA etl_changes FROM PUBLIC;
REVOKE ALL ON SCHEMA etl_changes FROM PUBLIC;
