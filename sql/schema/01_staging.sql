-- Phase 1: the cleaned source (schema staging), as loaded by HospitalDB's ETL.
-- Keys and foreign keys keep the source coherent; the indexes are the ones the
-- phase 2 materialized views join and group on.
CREATE SCHEMA IF NOT EXISTS staging;

CREATE TABLE IF NOT EXISTS staging.branches (
    branch_id   integer PRIMARY KEY,
    branch_name text    NOT NULL UNIQUE,
    city        text    NOT NULL,
    opened_on   date    NOT NULL
);

CREATE TABLE IF NOT EXISTS staging.doctors (
    doctor_id integer PRIMARY KEY,
    branch_id integer NOT NULL REFERENCES staging.branches,
    full_name text    NOT NULL,
    specialty text    NOT NULL
);

CREATE TABLE IF NOT EXISTS staging.patients (
    patient_id     integer PRIMARY KEY,
    full_name      text    NOT NULL,
    birth_date     date    NOT NULL,
    sex            char(1) NOT NULL CHECK (sex IN ('F', 'M', 'X')),
    home_branch_id integer NOT NULL REFERENCES staging.branches,
    registered_on  date    NOT NULL
);

CREATE TABLE IF NOT EXISTS staging.visits (
    visit_id   bigint  PRIMARY KEY,
    patient_id integer NOT NULL REFERENCES staging.patients,
    doctor_id  integer NOT NULL REFERENCES staging.doctors,
    branch_id  integer NOT NULL REFERENCES staging.branches,
    visit_date date    NOT NULL,
    visit_type text    NOT NULL CHECK (visit_type IN ('outpatient', 'emergency', 'inpatient', 'follow_up'))
);
CREATE INDEX IF NOT EXISTS visits_patient_id_idx ON staging.visits (patient_id);
CREATE INDEX IF NOT EXISTS visits_branch_id_visit_date_idx ON staging.visits (branch_id, visit_date);

-- One visit has one or more billing lines; a line is paid by zero or more payments.
CREATE TABLE IF NOT EXISTS staging.billing (
    billing_id   bigint        PRIMARY KEY,
    visit_id     bigint        NOT NULL REFERENCES staging.visits,
    service_code text          NOT NULL,
    amount       numeric(12,2) NOT NULL CHECK (amount >= 0),
    status       text          NOT NULL CHECK (status IN ('paid', 'partially_paid', 'pending', 'denied')),
    billed_on    date          NOT NULL
);
CREATE INDEX IF NOT EXISTS billing_visit_id_idx ON staging.billing (visit_id);

-- No CHECK on amount: refunds and corrections arrive as they are, and the
-- reporting tables' own checks decide what may reach the dashboards.
CREATE TABLE IF NOT EXISTS staging.payments (
    payment_id bigint        PRIMARY KEY,
    billing_id bigint        NOT NULL REFERENCES staging.billing,
    amount     numeric(12,2) NOT NULL,
    paid_on    date          NOT NULL,
    method     text          NOT NULL
);
CREATE INDEX IF NOT EXISTS payments_billing_id_idx ON staging.payments (billing_id);
