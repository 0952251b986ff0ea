-- Dashboards: small, denormalised tables that dashboard tiles read as they are.
-- Kept up to date by sql/refresh_dashboards.sql from the reporting tables.
CREATE SCHEMA IF NOT EXISTS dashboards;

CREATE TABLE IF NOT EXISTS dashboards.daily_revenue (
    revenue_date       date          PRIMARY KEY,
    visit_count        integer       NOT NULL,
    billed_amount      numeric(14,2) NOT NULL,
    paid_amount        numeric(14,2) NOT NULL,
    outstanding_amount numeric(14,2) NOT NULL,
    collection_rate    numeric,       -- unbounded: payments can exceed billed many times over
    updated_at         timestamptz   NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS dashboards.branch_performance (
    branch_id            integer       PRIMARY KEY,
    branch_name          text          NOT NULL,
    city                 text          NOT NULL,
    visit_count          integer       NOT NULL,
    patient_count        integer       NOT NULL,
    billed_amount        numeric(14,2) NOT NULL,
    paid_amount          numeric(14,2) NOT NULL,
    collection_rate      numeric,
    avg_billed_per_visit numeric(12,2),
    revenue_rank         integer       NOT NULL,
    updated_at           timestamptz   NOT NULL DEFAULT now()
);

-- Recency is measured against the newest visit in the warehouse, not the wall
-- clock, so a late-arriving load does not turn every patient "inactive".
CREATE TABLE IF NOT EXISTS dashboards.patient_activity (
    patient_id            integer       PRIMARY KEY,
    full_name             text          NOT NULL,
    visit_count           integer       NOT NULL,
    last_visit_date       date,
    days_since_last_visit integer,
    activity_segment      text          NOT NULL
        CHECK (activity_segment IN ('frequent', 'regular', 'occasional', 'lapsed', 'never_visited')),
    total_billed          numeric(14,2) NOT NULL,
    total_unpaid          numeric(14,2) NOT NULL,
    updated_at            timestamptz   NOT NULL DEFAULT now()
);
