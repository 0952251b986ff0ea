-- Phase 2: the analytics tables, over the staging source.
--
-- Tables the refresh maintains (sql/refresh_phase2_materialized_views.sql): they keep the names,
-- columns and types of the materialized views they were until 1.9.0, so readers see no
-- difference, and unlike a view their rows can be changed one by one, which is what lets a
-- night recompute only what changed (sql/incremental/). Each has a primary key on the unique key
-- of the view it replaces, under that view's unique index name. The other indexes serve the
-- incremental forms: a visit's billing lines, a patient's visits, a branch's visits by patient
-- and by date, the visits of a day and branch. An upgrade from the views:
-- sql/migrations/2026-12-07_analytics_views_become_tables.sql.
CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per billing line, with its visit context and what was paid on it.
-- Denied lines owe nothing: outstanding is what is still collectible.
CREATE TABLE IF NOT EXISTS analytics.mv_billing_summary (
    billing_id         bigint        NOT NULL,
    visit_id           bigint,
    patient_id         integer,
    branch_id          integer,
    doctor_id          integer,
    visit_date         date,
    service_code       text,
    status             text,
    billed_amount      numeric(12,2),
    paid_amount        numeric,
    outstanding_amount numeric,
    is_paid            boolean,
    CONSTRAINT mv_billing_summary_billing_id_key PRIMARY KEY (billing_id)
);
CREATE INDEX IF NOT EXISTS mv_billing_summary_visit_id_idx ON analytics.mv_billing_summary (visit_id);

-- One row per visit: billed, paid and outstanding over its billing lines.
CREATE TABLE IF NOT EXISTS analytics.mv_visit_summary (
    visit_id           bigint  NOT NULL,
    patient_id         integer,
    doctor_id          integer,
    branch_id          integer,
    visit_date         date,
    visit_type         text,
    billing_lines      bigint,
    billed_amount      numeric,
    paid_amount        numeric,
    outstanding_amount numeric,
    CONSTRAINT mv_visit_summary_visit_id_key PRIMARY KEY (visit_id)
);
CREATE INDEX IF NOT EXISTS mv_visit_summary_patient_id_idx ON analytics.mv_visit_summary (patient_id);
CREATE INDEX IF NOT EXISTS mv_visit_summary_branch_id_patient_id_idx
    ON analytics.mv_visit_summary (branch_id, patient_id);
CREATE INDEX IF NOT EXISTS mv_visit_summary_branch_id_visit_date_idx
    ON analytics.mv_visit_summary (branch_id, visit_date);

-- One row per patient, including patients who never had a visit.
CREATE TABLE IF NOT EXISTS analytics.mv_patient_summary (
    patient_id       integer NOT NULL,
    visit_count      bigint,
    first_visit_date date,
    last_visit_date  date,
    billed_amount    numeric,
    paid_amount      numeric,
    unpaid_amount    numeric,
    CONSTRAINT mv_patient_summary_patient_id_key PRIMARY KEY (patient_id)
);

-- One row per branch, including branches with no visit yet.
CREATE TABLE IF NOT EXISTS analytics.mv_branch_billing_summary (
    branch_id          integer NOT NULL,
    visit_count        bigint,
    patient_count      bigint,
    billed_amount      numeric,
    paid_amount        numeric,
    outstanding_amount numeric,
    first_visit_date   date,
    last_visit_date    date,
    CONSTRAINT mv_branch_billing_summary_branch_id_key PRIMARY KEY (branch_id)
);
