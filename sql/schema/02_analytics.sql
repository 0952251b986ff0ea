-- Phase 2: analytics materialized views over the staging source.
-- Each view has a unique index: REFRESH MATERIALIZED VIEW CONCURRENTLY needs one
-- to diff the new result against the old rows, so readers are never blocked.
-- mv_visit_summary, mv_patient_summary and mv_branch_billing_summary build on
-- mv_billing_summary, so a refresh in that order gives mutually consistent views.
--
-- Each view's query ends with ORDER BY its unique key. REFRESH ... CONCURRENTLY
-- checks the new rows for duplicates by sorting them, twice, on the whole row,
-- key first: rows that already arrive in key order make those sorts far cheaper
-- (at 1M visits the phase 2 refresh went from 24 s to 21 s; README, Performance).
-- The price is one sort by key inside the query.
CREATE SCHEMA IF NOT EXISTS analytics;

-- One row per billing line, with its visit context and what was paid on it.
-- Denied lines owe nothing: outstanding is what is still collectible.
CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.mv_billing_summary AS
SELECT b.billing_id,
       b.visit_id,
       v.patient_id,
       v.branch_id,
       v.doctor_id,
       v.visit_date,
       b.service_code,
       b.status,
       b.amount                        AS billed_amount,
       coalesce(p.paid_amount, 0)      AS paid_amount,
       CASE WHEN b.status = 'denied' THEN 0
            ELSE b.amount - coalesce(p.paid_amount, 0) END AS outstanding_amount,
       b.status = 'paid'               AS is_paid
FROM staging.billing AS b
JOIN staging.visits AS v USING (visit_id)
LEFT JOIN (
    SELECT billing_id, sum(amount) AS paid_amount
    FROM staging.payments
    GROUP BY billing_id
) AS p USING (billing_id)
ORDER BY b.billing_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_billing_summary_billing_id_key
    ON analytics.mv_billing_summary (billing_id);

-- One row per visit: billed, paid and outstanding over its billing lines.
CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.mv_visit_summary AS
SELECT v.visit_id,
       v.patient_id,
       v.doctor_id,
       v.branch_id,
       v.visit_date,
       v.visit_type,
       count(b.billing_id)                      AS billing_lines,
       coalesce(sum(b.billed_amount), 0)        AS billed_amount,
       coalesce(sum(b.paid_amount), 0)          AS paid_amount,
       coalesce(sum(b.outstanding_amount), 0)   AS outstanding_amount
FROM staging.visits AS v
LEFT JOIN analytics.mv_billing_summary AS b USING (visit_id)
GROUP BY v.visit_id
ORDER BY v.visit_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_visit_summary_visit_id_key
    ON analytics.mv_visit_summary (visit_id);

-- One row per patient, including patients who never had a visit.
CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.mv_patient_summary AS
SELECT p.patient_id,
       coalesce(s.visit_count, 0)     AS visit_count,
       s.first_visit_date,
       s.last_visit_date,
       coalesce(s.billed_amount, 0)   AS billed_amount,
       coalesce(s.paid_amount, 0)     AS paid_amount,
       coalesce(s.unpaid_amount, 0)   AS unpaid_amount
FROM staging.patients AS p
LEFT JOIN (
    SELECT patient_id,
           count(*)                AS visit_count,
           min(visit_date)         AS first_visit_date,
           max(visit_date)         AS last_visit_date,
           sum(billed_amount)      AS billed_amount,
           sum(paid_amount)        AS paid_amount,
           sum(outstanding_amount) AS unpaid_amount
    FROM analytics.mv_visit_summary
    GROUP BY patient_id
) AS s USING (patient_id)
ORDER BY p.patient_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_patient_summary_patient_id_key
    ON analytics.mv_patient_summary (patient_id);

-- One row per branch, including branches with no visit yet.
CREATE MATERIALIZED VIEW IF NOT EXISTS analytics.mv_branch_billing_summary AS
SELECT br.branch_id,
       coalesce(s.visit_count, 0)          AS visit_count,
       coalesce(s.patient_count, 0)        AS patient_count,
       coalesce(s.billed_amount, 0)        AS billed_amount,
       coalesce(s.paid_amount, 0)          AS paid_amount,
       coalesce(s.outstanding_amount, 0)   AS outstanding_amount,
       s.first_visit_date,
       s.last_visit_date
FROM staging.branches AS br
LEFT JOIN (
    SELECT branch_id,
           count(*)                   AS visit_count,
           count(DISTINCT patient_id) AS patient_count,
           sum(billed_amount)         AS billed_amount,
           sum(paid_amount)           AS paid_amount,
           sum(outstanding_amount)    AS outstanding_amount,
           min(visit_date)            AS first_visit_date,
           max(visit_date)            AS last_visit_date
    FROM analytics.mv_visit_summary
    GROUP BY branch_id
) AS s USING (branch_id)
ORDER BY br.branch_id;
CREATE UNIQUE INDEX IF NOT EXISTS mv_branch_billing_summary_branch_id_key
    ON analytics.mv_branch_billing_summary (branch_id);
