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
