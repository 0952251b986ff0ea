-- Phase 3: reporting tables, the stable contract that reports and BI tools read.
-- Plain tables (not views) so that readers get indexed, precomputed rows; they
-- are kept up to date by sql/refresh_phase3_reporting_tables.sql. updated_at
-- moves only when a row's values change.
CREATE SCHEMA IF NOT EXISTS reporting;

CREATE TABLE IF NOT EXISTS reporting.patient_summary (
    patient_id       integer       PRIMARY KEY,
    full_name        text          NOT NULL,
    home_branch_name text          NOT NULL,
    visit_count      integer       NOT NULL,
    first_visit_date date,
    last_visit_date  date,
    total_billed     numeric(14,2) NOT NULL,
    total_paid       numeric(14,2) NOT NULL,
    total_unpaid     numeric(14,2) NOT NULL,
    updated_at       timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS reporting.branch_summary (
    branch_id         integer       PRIMARY KEY,
    branch_name       text          NOT NULL,
    city              text          NOT NULL,
    doctor_count      integer       NOT NULL,
    patient_count     integer       NOT NULL,
    visit_count       integer       NOT NULL,
    total_billed      numeric(14,2) NOT NULL,
    total_paid        numeric(14,2) NOT NULL,
    total_outstanding numeric(14,2) NOT NULL,
    first_visit_date  date,
    last_visit_date   date,
    updated_at        timestamptz   NOT NULL DEFAULT now()
);

-- A negative day of payments means a refund or correction went wrong upstream:
-- the check stops the refresh (and keeps yesterday's numbers) instead of
-- publishing it.
CREATE TABLE IF NOT EXISTS reporting.revenue_summary (
    visit_date         date          NOT NULL,
    branch_id          integer       NOT NULL,
    visit_count        integer       NOT NULL,
    billed_amount      numeric(14,2) NOT NULL,
    paid_amount        numeric(14,2) NOT NULL CHECK (paid_amount >= 0),
    outstanding_amount numeric(14,2) NOT NULL,
    updated_at         timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (visit_date, branch_id)
);
