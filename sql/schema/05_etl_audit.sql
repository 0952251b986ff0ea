-- The refresh's audit trail: one row per run, per step attempt and per statement.
-- Written by the flow on its own autocommit session, outside the steps'
-- transactions, so failed and retried attempts are recorded too. The flow creates
-- this schema itself when it is missing (every statement is IF NOT EXISTS);
-- sql/monitoring/ reads it.
CREATE SCHEMA IF NOT EXISTS etl_audit;

CREATE TABLE IF NOT EXISTS etl_audit.refresh_runs (
    flow_run_id   uuid        PRIMARY KEY,
    flow_run_name text        NOT NULL,
    deployment    text,
    steps         text[]      NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz,
    status        text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'crashed')),
    error         text
);
CREATE INDEX IF NOT EXISTS refresh_runs_started_at_idx ON etl_audit.refresh_runs (started_at);

CREATE TABLE IF NOT EXISTS etl_audit.step_attempts (
    attempt_id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_run_id      uuid        NOT NULL,
    step             text        NOT NULL,
    attempt          integer     NOT NULL,
    started_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    duration_seconds numeric(12,3),
    statements       integer,
    rows_affected    bigint,
    status           text        NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed', 'crashed')),
    sqlstate         text,
    error            text
);
CREATE INDEX IF NOT EXISTS step_attempts_step_started_at_idx ON etl_audit.step_attempts (step, started_at);
CREATE INDEX IF NOT EXISTS step_attempts_flow_run_id_idx ON etl_audit.step_attempts (flow_run_id);

CREATE TABLE IF NOT EXISTS etl_audit.statement_runs (
    attempt_id       bigint        NOT NULL REFERENCES etl_audit.step_attempts ON DELETE CASCADE,
    statement_number integer       NOT NULL,
    location         text          NOT NULL,
    summary          text          NOT NULL,
    duration_seconds numeric(12,3) NOT NULL,
    rows_affected    bigint,
    finished_at      timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (attempt_id, statement_number)
);

-- When the freshness check last alerted, so that a stale warehouse alerts once
-- per re-alert period, not at every check.
CREATE TABLE IF NOT EXISTS etl_audit.freshness_alerts (
    sent_at        timestamptz PRIMARY KEY DEFAULT now(),
    stale_steps    text[]      NOT NULL
);

-- Run and attempt statuses: 'abandoned' marks a run (and its attempts) that was still
-- 'running' when a later run took the refresh lock, so it cannot be running any more: its
-- process was killed without a chance to record it (SIGKILL, OOM, a lost node).
ALTER TABLE etl_audit.refresh_runs DROP CONSTRAINT IF EXISTS refresh_runs_status_check;
ALTER TABLE etl_audit.refresh_runs ADD CONSTRAINT refresh_runs_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'crashed', 'cancelled', 'abandoned'));
ALTER TABLE etl_audit.step_attempts DROP CONSTRAINT IF EXISTS step_attempts_status_check;
ALTER TABLE etl_audit.step_attempts ADD CONSTRAINT step_attempts_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'crashed', 'cancelled', 'abandoned'));

-- Data checks (sql/checks/): one row per check per step attempt, and per source
-- table for the source checks (step 'check_sources'). Written on the audit session,
-- so a check that failed and rolled its step back is on record too.
CREATE TABLE IF NOT EXISTS etl_audit.check_results (
    result_id        bigint        GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    flow_run_id      uuid          NOT NULL,
    attempt_id       bigint        REFERENCES etl_audit.step_attempts ON DELETE CASCADE,
    step             text          NOT NULL,
    check_name       text          NOT NULL,
    source_file      text          NOT NULL,
    severity         text          NOT NULL CHECK (severity IN ('error', 'warn')),
    outcome          text          NOT NULL CHECK (outcome IN ('passed', 'warned', 'failed')),
    violating_rows   bigint        NOT NULL,
    duration_seconds numeric(12,3) NOT NULL,
    detail           text,
    checked_at       timestamptz   NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS check_results_flow_run_id_idx ON etl_audit.check_results (flow_run_id);
CREATE INDEX IF NOT EXISTS check_results_check_name_idx ON etl_audit.check_results (check_name, checked_at);

-- Row count and newest data of each source table at each run: the baseline that the
-- next run's source checks compare against (the last successful run's counts).
CREATE TABLE IF NOT EXISTS etl_audit.source_counts (
    flow_run_id uuid        NOT NULL,
    source      text        NOT NULL,
    row_count   bigint      NOT NULL,
    newest      timestamptz,
    checked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_run_id, source)
);

-- What each run's steps refresh, as read from the step files by PostgreSQL's parser,
-- and, once its step committed, how many rows each object held and how many the step
-- inserted, updated and deleted: monitoring and data_status join on it, so no query
-- lists objects by name.
CREATE TABLE IF NOT EXISTS etl_audit.run_objects (
    flow_run_id uuid   NOT NULL,
    step        text   NOT NULL,
    object_name text   NOT NULL,
    row_count   bigint,
    inserted    bigint,
    updated     bigint,
    deleted     bigint,
    PRIMARY KEY (flow_run_id, object_name)
);

-- reads: what the object's SQL reads directly (hospitaldb.engine.sql.lineage: temporary tables and
-- CTEs resolved to what they read), as the run that planned it found it. NULL before this column.
ALTER TABLE etl_audit.run_objects ADD COLUMN IF NOT EXISTS reads text[];

-- upkeep: what was done to the object after its step committed (hospitaldb.engine.run.upkeep):
-- analyzed, vacuumed (and analyzed), or skipped with why; upkeep_seconds how long it took.
ALTER TABLE etl_audit.run_objects ADD COLUMN IF NOT EXISTS upkeep text;
ALTER TABLE etl_audit.run_objects ADD COLUMN IF NOT EXISTS upkeep_seconds numeric(12,3);

-- published_at: when the object's new data committed: its step's COMMIT, or with parallel_views
-- the view's own (a step that fails there may have published some of its views). Objects
-- recorded before this column: when their step's attempt completed in that run.
ALTER TABLE etl_audit.run_objects ADD COLUMN IF NOT EXISTS published_at timestamptz;
UPDATE etl_audit.run_objects AS o
SET published_at = a.finished_at
FROM etl_audit.step_attempts AS a
WHERE o.published_at IS NULL
  AND a.flow_run_id = o.flow_run_id AND a.step = o.step AND a.status = 'completed';

-- held_back: the objects a run that failed, was refused, cancelled or crashed did not publish,
-- so that they keep their previous data, and why: how the run ended, or the held-back object
-- it reads (upstream). Written once, when the run ends; data_status reads it.
CREATE TABLE IF NOT EXISTS etl_audit.held_back (
    flow_run_id uuid NOT NULL,
    object_name text NOT NULL,
    step        text NOT NULL,
    reason      text NOT NULL,
    upstream    text,
    PRIMARY KEY (flow_run_id, object_name)
);

-- refreshed_objects: every object the refresh keeps, with its step, as the latest run
-- that planned it read them from the step files. Monitoring and data_status start here.
CREATE OR REPLACE VIEW etl_audit.refreshed_objects AS
SELECT DISTINCT ON (o.object_name) o.object_name, o.step
FROM etl_audit.run_objects AS o
JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
ORDER BY o.object_name, r.started_at DESC;

-- data_status: what a dashboard reader needs to know about each refreshed object,
-- readable with a read-only role (README, "Data you can trust"):
--   published_at     when its data was last published: its step's COMMIT (or, with
--                    parallel_views, the view's own);
--   last_run_status  how the latest finished run that included its step ended;
--   last_run_checks  that run's checks for the step (and its source checks): failed,
--                    warned, passed (the step committed), or not run (the run ended
--                    before the step);
--   is_stale         nothing published for 26 hours (the nightly run plus two hours, as
--                    the freshness check's default);
--   held_back_since  when the first run that failed to publish it since it was last
--                    published started (NULL: the latest run published it);
--   held_back_because why, as the latest such run recorded it: "the run failed at
--                    refresh_phase3_reporting_tables: check x failed", or "reads
--                    reporting.revenue_summary, held back".
CREATE OR REPLACE VIEW etl_audit.data_status AS
WITH object AS (
    SELECT object_name, step FROM etl_audit.refreshed_objects
), published AS (
    SELECT object_name, max(published_at) AS published_at
    FROM etl_audit.run_objects
    WHERE published_at IS NOT NULL
    GROUP BY object_name
), last_run AS (
    SELECT DISTINCT ON (o.step) o.step, r.flow_run_id, r.status
    FROM etl_audit.run_objects AS o
    JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
    WHERE r.status <> 'running'
    ORDER BY o.step, r.started_at DESC
), last_checks AS (
    SELECT l.step,
           CASE WHEN bool_or(c.outcome = 'failed') THEN 'failed'
                WHEN bool_or(c.outcome = 'warned') THEN 'warned'
                WHEN EXISTS (
                    SELECT FROM etl_audit.step_attempts AS a
                    WHERE a.flow_run_id = l.flow_run_id AND a.step = l.step AND a.status = 'completed'
                ) THEN 'passed'
                ELSE 'not run' END AS outcome
    FROM last_run AS l
    LEFT JOIN etl_audit.check_results AS c
           ON c.flow_run_id = l.flow_run_id AND c.step IN (l.step, 'check_sources')
    GROUP BY l.step, l.flow_run_id
), held AS (
    SELECT h.object_name, r.started_at, h.reason
    FROM etl_audit.held_back AS h
    JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
    LEFT JOIN published AS p ON p.object_name = h.object_name
    WHERE p.published_at IS NULL OR coalesce(r.finished_at, r.started_at) > p.published_at
), held_since AS (
    SELECT DISTINCT ON (object_name) object_name,
           min(started_at) OVER (PARTITION BY object_name) AS held_back_since,
           reason AS held_back_because
    FROM held
    ORDER BY object_name, started_at DESC
)
SELECT o.object_name,
       o.step,
       p.published_at,
       round(extract(epoch FROM now() - p.published_at) / 3600, 2) AS hours_since_published,
       l.status                                                     AS last_run_status,
       coalesce(c.outcome, 'not run')                               AS last_run_checks,
       p.published_at IS NULL OR p.published_at < now() - interval '26 hours' AS is_stale,
       h.held_back_since,
       h.held_back_because
FROM object AS o
LEFT JOIN published AS p USING (object_name)
LEFT JOIN last_run AS l USING (step)
LEFT JOIN last_checks AS c USING (step)
LEFT JOIN held_since AS h USING (object_name);

-- How each run ended and where, as the run recorded it (hospitaldb.outcome): outcome is one
-- of completed, failed (a step, connecting, the overlap lock), check_failed (a step's check
-- refused the data), sources_refused (the source checks refused staging), refused (before
-- the first step: SQL that does not parse or would block readers, bad settings), cancelled,
-- crashed, abandoned, or running. status keeps the coarser values earlier versions wrote
-- (the three refusals are 'failed' there). failed_step is the step, or check_sources, where it
-- ended; NULL before the first step. error never holds a value from a row (README, "What
-- leaves the database").
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS outcome text;
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS failed_step text;
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS attempts integer;
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS sqlstate text;
-- Runs recorded before these columns: their outcome and place from what else is on record
-- (failed check results, the last unfinished attempt), never from the error's words.
UPDATE etl_audit.refresh_runs AS r
SET outcome = CASE
        WHEN r.status <> 'failed' THEN r.status
        WHEN EXISTS (SELECT FROM etl_audit.check_results AS c
                     WHERE c.flow_run_id = r.flow_run_id AND c.outcome = 'failed' AND c.step = 'check_sources')
            THEN 'sources_refused'
        WHEN EXISTS (SELECT FROM etl_audit.check_results AS c
                     WHERE c.flow_run_id = r.flow_run_id AND c.outcome = 'failed')
            THEN 'check_failed'
        ELSE 'failed' END,
    (failed_step, attempts, sqlstate) = (
        SELECT a.step, a.attempt, a.sqlstate FROM etl_audit.step_attempts AS a
        WHERE a.flow_run_id = r.flow_run_id AND a.status <> 'completed' AND r.status <> 'completed'
        ORDER BY a.attempt_id DESC LIMIT 1)
WHERE r.outcome IS NULL;
UPDATE etl_audit.refresh_runs AS r SET failed_step = 'check_sources'
WHERE r.outcome = 'sources_refused' AND r.failed_step IS NULL;
ALTER TABLE etl_audit.refresh_runs ALTER COLUMN outcome SET DEFAULT 'running';
ALTER TABLE etl_audit.refresh_runs ALTER COLUMN outcome SET NOT NULL;
ALTER TABLE etl_audit.refresh_runs DROP CONSTRAINT IF EXISTS refresh_runs_outcome_check;
ALTER TABLE etl_audit.refresh_runs ADD CONSTRAINT refresh_runs_outcome_check
    CHECK (outcome IN ('running', 'completed', 'failed', 'check_failed', 'sources_refused', 'refused',
                       'cancelled', 'crashed', 'abandoned'));
CREATE INDEX IF NOT EXISTS refresh_runs_finished_at_idx ON etl_audit.refresh_runs (finished_at);

-- run_notices: the alert (or recovery notice) each run's end was told with, by whom: 'run'
-- (its own process, as it ended: no Prefect API needed) or 'hook' (a state hook, when the run
-- could not tell it itself), and the channels that took it (empty: every channel failed, and
-- the run's logs say why). Whoever tries first writes the row; a hook that finds one sends
-- nothing, so a failed run alerts once. Append-only: a row is never changed.
CREATE TABLE IF NOT EXISTS etl_audit.run_notices (
    flow_run_id uuid        NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('alert', 'recovery')),
    sent_by     text        NOT NULL CHECK (sent_by IN ('run', 'hook')),
    channels    text[]      NOT NULL,
    sent_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (flow_run_id, kind)
);

-- task_run_id: the Prefect task run of the attempt, so that a run whose end Prefect never
-- heard (its API down) can have each task run set to what its attempt recorded
-- (hospitaldb.report.healing). NULL outside Prefect task runs and before this column.
ALTER TABLE etl_audit.step_attempts ADD COLUMN IF NOT EXISTS task_run_id uuid;

-- refresh_lock: what keeps two refreshes of this database apart. A run holds it in SHARE ROW
-- EXCLUSIVE mode on its lock session for its whole length (hospitaldb.engine.run.lock), a
-- table lock that only a role allowed to write etl_audit may take: a role that can merely log
-- in cannot stop the refreshes by holding it, as it could the advisory key alone. No rows.
CREATE TABLE IF NOT EXISTS etl_audit.refresh_lock ();

-- Append-only: what is on record stays as it was recorded. A role that may not delete from a
-- table of etl_audit (the least-privilege refresher) may add rows and finish what is still
-- open, nothing more: an open run (status 'running') may be closed, an open attempt finished,
-- an open run's objects and source counts filled in; a closed run may only be reopened by a
-- new execution of the same flow run (Prefect's retry of a flow run keeps its id), and its
-- earlier ending stays in run_endings. Its owner and administrators (who may delete) may
-- still correct or trim it.
CREATE TABLE IF NOT EXISTS etl_audit.run_endings (
    flow_run_id uuid        NOT NULL,
    outcome     text        NOT NULL,
    failed_step text,
    attempts    integer,
    sqlstate    text,
    error       text,
    finished_at timestamptz,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS run_endings_flow_run_id_idx ON etl_audit.run_endings (flow_run_id);
-- executions: how many times the flow run was executed (Prefect's retry of a flow run keeps its id):
-- each execution opens the run anew and adds its own ending, numbered, to run_endings.
-- writer_pid: the backend of the audit session that records the open run (etl_audit.claim_run).
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS executions integer NOT NULL DEFAULT 1;
ALTER TABLE etl_audit.refresh_runs ADD COLUMN IF NOT EXISTS writer_pid integer;
ALTER TABLE etl_audit.run_endings ADD COLUMN IF NOT EXISTS execution integer;

CREATE OR REPLACE FUNCTION etl_audit.keep_run_ending() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.status <> 'running' AND (TG_OP = 'INSERT' OR OLD.status = 'running') THEN
        INSERT INTO etl_audit.run_endings (flow_run_id, outcome, failed_step, attempts, sqlstate, error, finished_at,
                                           execution)
        VALUES (NEW.flow_run_id, NEW.outcome, NEW.failed_step, NEW.attempts, NEW.sqlstate, NEW.error, NEW.finished_at,
                NEW.executions);
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS keep_run_ending ON etl_audit.refresh_runs;
CREATE TRIGGER keep_run_ending AFTER INSERT OR UPDATE ON etl_audit.refresh_runs
    FOR EACH ROW EXECUTE FUNCTION etl_audit.keep_run_ending();

CREATE OR REPLACE FUNCTION etl_audit.refuse_rewriting_the_record() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF has_table_privilege(TG_RELID, 'DELETE') THEN
        RETURN NEW;  -- the owner, an administrator: may correct
    END IF;
    IF TG_TABLE_NAME = 'refresh_runs' THEN
        IF OLD.status = 'running' OR (NEW.status = 'running' AND NEW.finished_at IS NULL) THEN
            RETURN NEW;
        END IF;
    ELSIF TG_TABLE_NAME = 'step_attempts' THEN
        IF OLD.status = 'running' THEN
            RETURN NEW;
        END IF;
    ELSIF TG_TABLE_NAME IN ('run_objects', 'source_counts') THEN
        IF EXISTS (SELECT FROM etl_audit.refresh_runs AS r
                   WHERE r.flow_run_id = OLD.flow_run_id AND r.status = 'running') THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'etl_audit is append-only: % of a closed record in etl_audit.% refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only a role that may delete from etl_audit (its owner) may change what is on record.';
END $$;
DO $$
DECLARE
    audited text;
BEGIN
    FOREACH audited IN ARRAY ARRAY['refresh_runs', 'step_attempts', 'statement_runs', 'check_results',
                                   'source_counts', 'run_objects', 'held_back', 'run_notices',
                                   'freshness_alerts', 'run_endings'] LOOP
        EXECUTE format('DROP TRIGGER IF EXISTS refuse_rewriting_the_record ON etl_audit.%I', audited);
        EXECUTE format('CREATE TRIGGER refuse_rewriting_the_record BEFORE UPDATE ON etl_audit.%I '
                       'FOR EACH ROW EXECUTE FUNCTION etl_audit.refuse_rewriting_the_record()', audited);
    END LOOP;
END $$;

-- refresh_materialized_view: how a refresher that does not own the materialized views refreshes
-- them (PostgreSQL before 17 lets only the owner REFRESH). `hospitaldb roles` gives the views the
-- step SQL refreshes to the NOLOGIN owner, and this function, SECURITY DEFINER, to the same owner:
-- it refreshes a materialized view its owner owns, nothing else, and the refresher, which may only
-- execute it, cannot grant, alter or drop those views. The engine calls it for a REFRESH statement
-- of a step when the run's role does not own the view.
-- It refuses to run while the calling session has a temporary table, view or type named like a
-- relation or type of another schema: the view's query runs as the owner, and a name it resolves
-- through a search_path without pg_temp last (a function's own SET search_path, say) finds the
-- caller's temporary object first, which would run the caller's code with the owner's rights.
-- A name nothing else holds shadows nothing (the shrink guard's refresh_row_counts).
CREATE OR REPLACE FUNCTION etl_audit.refresh_materialized_view(target regclass, concurrent boolean)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (
        WITH mine AS (
            SELECT relname AS name FROM pg_class WHERE relnamespace = pg_my_temp_schema()
            UNION SELECT typname FROM pg_type WHERE typnamespace = pg_my_temp_schema()
        ), elsewhere AS (
            SELECT c.relname AS name FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE n.nspname !~ '^pg_(toast_)?temp_'
            UNION SELECT t.typname FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
            WHERE n.nspname !~ '^pg_(toast_)?temp_'
        )
        SELECT FROM mine JOIN elsewhere USING (name)) THEN
        RAISE EXCEPTION 'refresh_materialized_view refuses to refresh % while this session has a temporary object named like another schema''s', target
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Name the step''s temporary tables apart from every table, view and type, or refresh the views before creating them.';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_class AS c
                   WHERE c.oid = target AND c.relkind = 'm' AND pg_has_role(c.relowner, 'USAGE')) THEN
        RAISE EXCEPTION 'refresh_materialized_view refreshes only the materialized views of its owner: % is not one', target
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF concurrent THEN
        EXECUTE format('REFRESH MATERIALIZED VIEW CONCURRENTLY %s', target);
    ELSE
        EXECUTE format('REFRESH MATERIALIZED VIEW %s', target);
    END IF;
END $$;
REVOKE ALL ON FUNCTION etl_audit.refresh_materialized_view(regclass, boolean) FROM PUBLIC;

-- The refresher writes etl_audit only through the functions below: `hospitaldb roles` grants it
-- SELECT on the audit and EXECUTE on these, never INSERT or UPDATE. Each keeps a record's life:
-- a run opens once per execution and closes once; attempts, statements, checks, objects and
-- source counts belong to an open run; only the audit session of that run writes it (its
-- application_name names the run, and while the backend that opened it is connected, no other
-- may); every time is the database's clock; a closed run is never edited: a flow run Prefect
-- executes again opens a new execution, and each execution's ending stays in run_endings, which
-- monitoring reads. SECURITY DEFINER, owned by etl_audit's owner, with a pinned search_path.
CREATE OR REPLACE FUNCTION etl_audit.claim_run(run uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    holder integer;
    run_status text;
BEGIN
    SELECT r.writer_pid, r.status INTO holder, run_status
    FROM etl_audit.refresh_runs AS r WHERE r.flow_run_id = run FOR UPDATE;
    IF NOT FOUND OR run_status <> 'running' THEN
        RAISE EXCEPTION 'etl_audit: run % is not open; what is on record for it stays as it is', run
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF current_setting('application_name') <> 'hospitaldb-refresh-audit-' || run THEN
        RAISE EXCEPTION 'etl_audit: only the audit session of run % records it', run
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF holder IS DISTINCT FROM pg_backend_pid() THEN
        IF EXISTS (SELECT FROM pg_stat_activity AS s
                   WHERE s.pid = holder AND s.application_name = 'hospitaldb-refresh-audit-' || run) THEN
            RAISE EXCEPTION 'etl_audit: run % is recorded by another session, still connected', run
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        -- Its session was lost (a failover, a crash): this one of the same run takes over.
        UPDATE etl_audit.refresh_runs SET writer_pid = pg_backend_pid() WHERE flow_run_id = run;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.open_run(run uuid, run_name text, deployment_name text, run_steps text[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF current_setting('application_name') <> 'hospitaldb-refresh-audit-' || run THEN
        RAISE EXCEPTION 'etl_audit: only the audit session of run % opens it', run
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO etl_audit.refresh_runs AS r (flow_run_id, flow_run_name, deployment, steps, writer_pid)
    VALUES (run, run_name, deployment_name, run_steps, pg_backend_pid())
    ON CONFLICT (flow_run_id) DO UPDATE
        SET executions = r.executions + 1, status = 'running', outcome = 'running', started_at = now(),
            finished_at = NULL, error = NULL, failed_step = NULL, attempts = NULL, sqlstate = NULL,
            steps = excluded.steps, writer_pid = pg_backend_pid()
        WHERE r.status <> 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl_audit: run % is already open; a run opens once per execution', run
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END $$;

-- Closes an open run (and its attempts still open) with how it ended; false when it was closed
-- already (whoever records an end first: the run, or a hook). A run refused before it opened is
-- opened and closed at once.
CREATE OR REPLACE FUNCTION etl_audit.close_run(
    run uuid, run_name text, deployment_name text, run_steps text[],
    run_outcome text, step text, attempt_count integer, state text, message text)
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run_status text := CASE WHEN run_outcome IN ('check_failed', 'sources_refused', 'refused') THEN 'failed'
                            ELSE run_outcome END;
BEGIN
    IF run_outcome = 'running' THEN
        RAISE EXCEPTION 'etl_audit: a run closes with how it ended, not as running' USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT FROM etl_audit.refresh_runs WHERE flow_run_id = run) THEN
        PERFORM etl_audit.open_run(run, run_name, deployment_name, run_steps);
    ELSIF NOT EXISTS (SELECT FROM etl_audit.refresh_runs WHERE flow_run_id = run AND status = 'running') THEN
        RETURN false;
    END IF;
    PERFORM etl_audit.claim_run(run);
    UPDATE etl_audit.step_attempts
    SET status = CASE WHEN run_status IN ('cancelled', 'crashed') THEN run_status ELSE 'failed' END,
        finished_at = now(), duration_seconds = extract(epoch FROM now() - started_at),
        error = coalesce(error, message)
    WHERE flow_run_id = run AND status = 'running';
    UPDATE etl_audit.refresh_runs
    SET status = run_status, outcome = run_outcome, failed_step = step, attempts = attempt_count,
        sqlstate = state, error = message, finished_at = now()
    WHERE flow_run_id = run;
    RETURN true;
END $$;

-- Other runs still open when this run took the refresh lock, whose audit session is gone:
-- their process died unrecorded (SIGKILL, OOM, a lost node). Returns how many.
CREATE OR REPLACE FUNCTION etl_audit.abandon_stale_runs(run uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    abandoned integer;
BEGIN
    PERFORM etl_audit.claim_run(run);
    WITH stale AS (
        UPDATE etl_audit.refresh_runs AS r SET status = 'abandoned', outcome = 'abandoned', finished_at = now(),
               failed_step = (SELECT a.step FROM etl_audit.step_attempts AS a
                              WHERE a.flow_run_id = r.flow_run_id AND a.status = 'running'
                              ORDER BY a.attempt_id DESC LIMIT 1),
               error = 'abandoned: still running when run ' || run || ' took the refresh lock at ' || now()
        WHERE r.status = 'running' AND r.flow_run_id <> run
          AND NOT EXISTS (SELECT FROM pg_stat_activity AS s
                          WHERE s.application_name = 'hospitaldb-refresh-audit-' || r.flow_run_id::text)
        RETURNING r.flow_run_id
    ), attempts AS (
        UPDATE etl_audit.step_attempts AS a SET status = 'abandoned', finished_at = now(),
               duration_seconds = extract(epoch FROM now() - a.started_at)
        FROM stale WHERE a.flow_run_id = stale.flow_run_id AND a.status = 'running'
    )
    SELECT count(*) INTO abandoned FROM stale;
    RETURN abandoned;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.open_attempt(run uuid, step_name text, attempt_number integer, task_run uuid)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    opened bigint;
BEGIN
    PERFORM etl_audit.claim_run(run);
    INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, task_run_id)
    VALUES (run, step_name, attempt_number, task_run) RETURNING attempt_id INTO opened;
    RETURN opened;
END $$;

-- The run of an attempt still open, claimed by this session; an error for any other.
CREATE OR REPLACE FUNCTION etl_audit.claim_attempt(attempt_key bigint) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    run uuid;
BEGIN
    SELECT a.flow_run_id INTO run FROM etl_audit.step_attempts AS a WHERE a.attempt_id = attempt_key AND a.status = 'running';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'etl_audit: attempt % is not open', attempt_key USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM etl_audit.claim_run(run);
    RETURN run;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.finish_attempt(
    attempt_key bigint, attempt_status text, statement_count integer, row_count bigint, state text, message text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF attempt_status = 'running' THEN
        RAISE EXCEPTION 'etl_audit: an attempt finishes with how it ended' USING ERRCODE = 'check_violation';
    END IF;
    PERFORM etl_audit.claim_attempt(attempt_key);
    UPDATE etl_audit.step_attempts
    SET status = attempt_status, finished_at = now(), duration_seconds = extract(epoch FROM now() - started_at),
        statements = statement_count, rows_affected = row_count, sqlstate = state, error = message
    WHERE attempt_id = attempt_key;
END $$;

-- Which form of the step ran (full or incremental, hospitaldb.engine.changes.modes), why, how many
-- changed keys it took, and how many rows a full run still changed after the incremental form
-- (drift: a fault of the incremental SQL, repaired by that full run). NULL before 1.8.0.
ALTER TABLE etl_audit.step_attempts ADD COLUMN IF NOT EXISTS mode text;
ALTER TABLE etl_audit.step_attempts ADD COLUMN IF NOT EXISTS mode_reason text;
ALTER TABLE etl_audit.step_attempts ADD COLUMN IF NOT EXISTS changed_keys bigint;
ALTER TABLE etl_audit.step_attempts ADD COLUMN IF NOT EXISTS drift_rows bigint;

CREATE OR REPLACE FUNCTION etl_audit.record_mode(
    attempt_key bigint, step_mode text, reason text, key_count bigint, drift bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF step_mode NOT IN ('full', 'incremental') THEN
        RAISE EXCEPTION 'etl_audit: a step runs full or incremental' USING ERRCODE = 'check_violation';
    END IF;
    PERFORM etl_audit.claim_attempt(attempt_key);
    UPDATE etl_audit.step_attempts
    SET mode = step_mode, mode_reason = reason, changed_keys = key_count, drift_rows = drift
    WHERE attempt_id = attempt_key;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.record_statement(
    attempt_key bigint, number integer, statement_location text, statement_summary text, seconds numeric,
    row_count bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_attempt(attempt_key);
    INSERT INTO etl_audit.statement_runs (attempt_id, statement_number, location, summary, duration_seconds,
                                          rows_affected)
    VALUES (attempt_key, number, statement_location, statement_summary, seconds, row_count);
END $$;

CREATE OR REPLACE FUNCTION etl_audit.record_check(
    run uuid, attempt_key bigint, step_name text, name text, source text, check_severity text, check_outcome text,
    violating bigint, seconds numeric, check_detail text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_run(run);
    IF attempt_key IS NOT NULL AND etl_audit.claim_attempt(attempt_key) <> run THEN
        RAISE EXCEPTION 'etl_audit: attempt % is not run %''s', attempt_key, run USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO etl_audit.check_results (flow_run_id, attempt_id, step, check_name, source_file, severity, outcome,
                                         violating_rows, duration_seconds, detail)
    VALUES (run, attempt_key, step_name, name, source, check_severity, check_outcome, violating, seconds, check_detail);
END $$;

CREATE OR REPLACE FUNCTION etl_audit.record_sources(run uuid, source_name text, counted bigint, newest_data timestamptz)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_run(run);
    INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count, newest)
    VALUES (run, source_name, counted, newest_data)
    ON CONFLICT (flow_run_id, source) DO UPDATE
        SET row_count = excluded.row_count, newest = excluded.newest, checked_at = now();
END $$;

CREATE OR REPLACE FUNCTION etl_audit.plan_object(run uuid, step_name text, object text, object_reads text[])
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_run(run);
    INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name, reads)
    VALUES (run, step_name, object, object_reads)
    ON CONFLICT (flow_run_id, object_name) DO UPDATE SET reads = excluded.reads;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.object_published(
    run uuid, attempt_key bigint, object text, object_rows bigint, rows_inserted bigint, rows_updated bigint,
    rows_deleted bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_run(run);
    UPDATE etl_audit.run_objects
    SET row_count = object_rows, inserted = rows_inserted, updated = rows_updated, deleted = rows_deleted,
        published_at = coalesce((SELECT a.finished_at FROM etl_audit.step_attempts AS a
                                 WHERE a.attempt_id = attempt_key AND a.flow_run_id = run), now())
    WHERE flow_run_id = run AND object_name = object;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.object_kept_up(run uuid, object text, what text, seconds numeric)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM etl_audit.claim_run(run);
    UPDATE etl_audit.run_objects SET upkeep = what, upkeep_seconds = seconds
    WHERE flow_run_id = run AND object_name = object;
END $$;

-- What an ending run did not publish; nothing once the run is closed (whoever ended it wrote it).
CREATE OR REPLACE FUNCTION etl_audit.hold_back(run uuid, object text, step_name text, why text, upstream_object text)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM etl_audit.refresh_runs WHERE flow_run_id = run AND status = 'running') THEN
        RETURN;
    END IF;
    PERFORM etl_audit.claim_run(run);
    INSERT INTO etl_audit.held_back (flow_run_id, object_name, step, reason, upstream)
    VALUES (run, object, step_name, why, upstream_object) ON CONFLICT DO NOTHING;
END $$;

-- The alert or notice a run was told with: once per run and kind, for a run on record; while it
-- is open only by its own session, once closed by its run's hook (application_name names the run).
CREATE OR REPLACE FUNCTION etl_audit.record_notice(run uuid, notice_kind text, by_whom text, took text[])
RETURNS boolean LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM etl_audit.refresh_runs WHERE flow_run_id = run) THEN
        RETURN false;
    ELSIF EXISTS (SELECT FROM etl_audit.refresh_runs WHERE flow_run_id = run AND status = 'running') THEN
        PERFORM etl_audit.claim_run(run);
    ELSIF current_setting('application_name') <> 'hospitaldb-refresh-audit-' || run THEN
        RAISE EXCEPTION 'etl_audit: only the audit session of run % records its notice', run
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO etl_audit.run_notices (flow_run_id, kind, sent_by, channels)
    VALUES (run, notice_kind, by_whom, took) ON CONFLICT (flow_run_id, kind) DO NOTHING;
    RETURN FOUND;
END $$;

CREATE OR REPLACE FUNCTION etl_audit.record_freshness_alert(stale text[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES (stale) ON CONFLICT (sent_at) DO NOTHING;
END $$;

-- Endings recorded before run_endings existed, or before this trigger kept them: filled in once
-- from the run's own row, so that monitoring, which reads endings, sees every finished run.
INSERT INTO etl_audit.run_endings (flow_run_id, outcome, failed_step, attempts, sqlstate, error, finished_at,
                                   execution)
SELECT r.flow_run_id, r.outcome, r.failed_step, r.attempts, r.sqlstate, r.error, r.finished_at, r.executions
FROM etl_audit.refresh_runs AS r
WHERE r.status <> 'running'
  AND NOT EXISTS (SELECT FROM etl_audit.run_endings AS e WHERE e.flow_run_id = r.flow_run_id);
