-- Run once, as the owner of the analytics views or a superuser, on a HospitalDB created before
-- 1.9.0: the four analytics materialized views become tables the refresh maintains, under the
-- same names, columns, types and rows (sql/schema/02_analytics.sql), so that a night can change
-- only the rows that changed. Readers see no difference; what they were granted on a view is
-- granted on its table.
--
--     psql --single-transaction -v ON_ERROR_STOP=1 -f sql/migrations/2026-12-07_analytics_views_become_tables.sql
--
-- One transaction. First each table is filled from its view (readers keep reading the views:
-- this takes the time, about a minute at 1M visits, and locks nothing they need); then the views
-- are dropped and the tables take their names, which holds an ACCESS EXCLUSIVE lock on the views
-- from the DROP to the COMMIT: a few milliseconds, but the DROP waits for readers already
-- running, and readers arriving meanwhile wait behind it. lock_timeout bounds that wait: when it
-- expires nothing has changed; run it again at a quieter moment. Do not run it during a refresh.
-- Afterwards: `hospitaldb roles` (where least privilege is set up, it grants the refresher what
-- the tables need) and `hospitaldb changes install` (where change capture is).
SET LOCAL lock_timeout = '5s';

CREATE TABLE analytics.mv_billing_summary__new (
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
    is_paid            boolean
);
INSERT INTO analytics.mv_billing_summary__new SELECT * FROM analytics.mv_billing_summary;

CREATE TABLE analytics.mv_visit_summary__new (
    visit_id           bigint  NOT NULL,
    patient_id         integer,
    doctor_id          integer,
    branch_id          integer,
    visit_date         date,
    visit_type         text,
    billing_lines      bigint,
    billed_amount      numeric,
    paid_amount        numeric,
    outstanding_amount numeric
);
INSERT INTO analytics.mv_visit_summary__new SELECT * FROM analytics.mv_visit_summary;

CREATE TABLE analytics.mv_patient_summary__new (
    patient_id       integer NOT NULL,
    visit_count      bigint,
    first_visit_date date,
    last_visit_date  date,
    billed_amount    numeric,
    paid_amount      numeric,
    unpaid_amount    numeric
);
INSERT INTO analytics.mv_patient_summary__new SELECT * FROM analytics.mv_patient_summary;

CREATE TABLE analytics.mv_branch_billing_summary__new (
    branch_id          integer NOT NULL,
    visit_count        bigint,
    patient_count      bigint,
    billed_amount      numeric,
    paid_amount        numeric,
    outstanding_amount numeric,
    first_visit_date   date,
    last_visit_date    date
);
INSERT INTO analytics.mv_branch_billing_summary__new SELECT * FROM analytics.mv_branch_billing_summary;

-- Each view's privileges, and its owner, carried over to its table.
DO $$
DECLARE
    view text;
    grant_ record;
BEGIN
    FOREACH view IN ARRAY ARRAY['mv_billing_summary', 'mv_visit_summary', 'mv_patient_summary',
                                'mv_branch_billing_summary'] LOOP
        EXECUTE format('ALTER TABLE analytics.%I OWNER TO %I', view || '__new',
                       (SELECT pg_get_userbyid(relowner) FROM pg_class
                        WHERE oid = format('analytics.%I', view)::regclass));
        FOR grant_ IN
            SELECT a.privilege_type, a.grantee, a.is_grantable
            FROM pg_class AS c, aclexplode(c.relacl) AS a
            WHERE c.oid = format('analytics.%I', view)::regclass AND a.grantee <> c.relowner
        LOOP
            EXECUTE format('GRANT %s ON analytics.%I TO %s%s', grant_.privilege_type, view || '__new',
                           CASE WHEN grant_.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(pg_get_userbyid(grant_.grantee)) END,
                           CASE WHEN grant_.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
END
$$;

ALTER TABLE analytics.mv_billing_summary__new
    ADD CONSTRAINT mv_billing_summary__new_pkey PRIMARY KEY (billing_id);
CREATE INDEX mv_billing_summary_visit_id_idx ON analytics.mv_billing_summary__new (visit_id);
ALTER TABLE analytics.mv_visit_summary__new
    ADD CONSTRAINT mv_visit_summary__new_pkey PRIMARY KEY (visit_id);
CREATE INDEX mv_visit_summary_patient_id_idx ON analytics.mv_visit_summary__new (patient_id);
CREATE INDEX mv_visit_summary_branch_id_patient_id_idx
    ON analytics.mv_visit_summary__new (branch_id, patient_id);
CREATE INDEX mv_visit_summary_branch_id_visit_date_idx
    ON analytics.mv_visit_summary__new (branch_id, visit_date);
ALTER TABLE analytics.mv_patient_summary__new
    ADD CONSTRAINT mv_patient_summary__new_pkey PRIMARY KEY (patient_id);
ALTER TABLE analytics.mv_branch_billing_summary__new
    ADD CONSTRAINT mv_branch_billing_summary__new_pkey PRIMARY KEY (branch_id);
ANALYZE analytics.mv_billing_summary__new, analytics.mv_visit_summary__new,
        analytics.mv_patient_summary__new, analytics.mv_branch_billing_summary__new;

-- The swap: from here to COMMIT readers of the views wait (see above). The views read each
-- other, so the later ones go first.
DROP MATERIALIZED VIEW analytics.mv_branch_billing_summary;
DROP MATERIALIZED VIEW analytics.mv_patient_summary;
DROP MATERIALIZED VIEW analytics.mv_visit_summary;
DROP MATERIALIZED VIEW analytics.mv_billing_summary;
ALTER TABLE analytics.mv_billing_summary__new RENAME TO mv_billing_summary;
ALTER TABLE analytics.mv_billing_summary RENAME CONSTRAINT mv_billing_summary__new_pkey TO mv_billing_summary_billing_id_key;
ALTER TABLE analytics.mv_visit_summary__new RENAME TO mv_visit_summary;
ALTER TABLE analytics.mv_visit_summary RENAME CONSTRAINT mv_visit_summary__new_pkey TO mv_visit_summary_visit_id_key;
ALTER TABLE analytics.mv_patient_summary__new RENAME TO mv_patient_summary;
ALTER TABLE analytics.mv_patient_summary RENAME CONSTRAINT mv_patient_summary__new_pkey TO mv_patient_summary_patient_id_key;
ALTER TABLE analytics.mv_branch_billing_summary__new RENAME TO mv_branch_billing_summary;
ALTER TABLE analytics.mv_branch_billing_summary RENAME CONSTRAINT mv_branch_billing_summary__new_pkey
    TO mv_branch_billing_summary_branch_id_key;
