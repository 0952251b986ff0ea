-- Step 1 of the nightly refresh: the phase 2 analytics tables, from staging. (The step keeps the
-- name it had when they were materialized views, so schedules, alerts and etl_audit keep theirs.)
--
-- Pattern: compute, then merge, as the reporting step does. Each table's new contents are
-- computed into a temporary table; an upsert changes only the rows whose values differ and a
-- delete removes the keys that are gone. Writers take ROW EXCLUSIVE locks, which never conflict
-- with readers, and MVCC shows readers the previous rows until the step commits. At 1M visits
-- this costs about 11 s where REFRESH ... CONCURRENTLY cost 19 s (docs/decisions.md), and a
-- table's rows can be changed one by one: the incremental form (incremental/) recomputes only
-- what changed.
--
-- The whole file runs in one transaction, so the four tables change together or not at all.
-- Order matters: later tables read mv_billing_summary and mv_visit_summary, which must already
-- hold the new rows.

CREATE TEMP TABLE new_billing_summary ON COMMIT DROP AS
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
) AS p USING (billing_id);
ANALYZE new_billing_summary;

INSERT INTO analytics.mv_billing_summary AS t
       (billing_id, visit_id, patient_id, branch_id, doctor_id, visit_date, service_code, status,
        billed_amount, paid_amount, outstanding_amount, is_paid)
SELECT billing_id, visit_id, patient_id, branch_id, doctor_id, visit_date, service_code, status,
       billed_amount, paid_amount, outstanding_amount, is_paid
FROM new_billing_summary
ON CONFLICT (billing_id) DO UPDATE
SET visit_id = excluded.visit_id,
    patient_id = excluded.patient_id,
    branch_id = excluded.branch_id,
    doctor_id = excluded.doctor_id,
    visit_date = excluded.visit_date,
    service_code = excluded.service_code,
    status = excluded.status,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    outstanding_amount = excluded.outstanding_amount,
    is_paid = excluded.is_paid
WHERE (t.visit_id, t.patient_id, t.branch_id, t.doctor_id, t.visit_date, t.service_code, t.status,
       t.billed_amount, t.paid_amount, t.outstanding_amount, t.is_paid)
      IS DISTINCT FROM
      (excluded.visit_id, excluded.patient_id, excluded.branch_id, excluded.doctor_id,
       excluded.visit_date, excluded.service_code, excluded.status, excluded.billed_amount,
       excluded.paid_amount, excluded.outstanding_amount, excluded.is_paid);

DELETE FROM analytics.mv_billing_summary AS t
WHERE NOT EXISTS (SELECT FROM new_billing_summary AS n WHERE n.billing_id = t.billing_id);

CREATE TEMP TABLE new_visit_summary ON COMMIT DROP AS
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
GROUP BY v.visit_id;
ANALYZE new_visit_summary;

INSERT INTO analytics.mv_visit_summary AS t
       (visit_id, patient_id, doctor_id, branch_id, visit_date, visit_type, billing_lines,
        billed_amount, paid_amount, outstanding_amount)
SELECT visit_id, patient_id, doctor_id, branch_id, visit_date, visit_type, billing_lines,
       billed_amount, paid_amount, outstanding_amount
FROM new_visit_summary
ON CONFLICT (visit_id) DO UPDATE
SET patient_id = excluded.patient_id,
    doctor_id = excluded.doctor_id,
    branch_id = excluded.branch_id,
    visit_date = excluded.visit_date,
    visit_type = excluded.visit_type,
    billing_lines = excluded.billing_lines,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    outstanding_amount = excluded.outstanding_amount
WHERE (t.patient_id, t.doctor_id, t.branch_id, t.visit_date, t.visit_type, t.billing_lines,
       t.billed_amount, t.paid_amount, t.outstanding_amount)
      IS DISTINCT FROM
      (excluded.patient_id, excluded.doctor_id, excluded.branch_id, excluded.visit_date,
       excluded.visit_type, excluded.billing_lines, excluded.billed_amount, excluded.paid_amount,
       excluded.outstanding_amount);

DELETE FROM analytics.mv_visit_summary AS t
WHERE NOT EXISTS (SELECT FROM new_visit_summary AS n WHERE n.visit_id = t.visit_id);

CREATE TEMP TABLE new_patient_summary ON COMMIT DROP AS
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
) AS s USING (patient_id);
ANALYZE new_patient_summary;

INSERT INTO analytics.mv_patient_summary AS t
       (patient_id, visit_count, first_visit_date, last_visit_date, billed_amount, paid_amount,
        unpaid_amount)
SELECT patient_id, visit_count, first_visit_date, last_visit_date, billed_amount, paid_amount,
       unpaid_amount
FROM new_patient_summary
ON CONFLICT (patient_id) DO UPDATE
SET visit_count = excluded.visit_count,
    first_visit_date = excluded.first_visit_date,
    last_visit_date = excluded.last_visit_date,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    unpaid_amount = excluded.unpaid_amount
WHERE (t.visit_count, t.first_visit_date, t.last_visit_date, t.billed_amount, t.paid_amount,
       t.unpaid_amount)
      IS DISTINCT FROM
      (excluded.visit_count, excluded.first_visit_date, excluded.last_visit_date,
       excluded.billed_amount, excluded.paid_amount, excluded.unpaid_amount);

DELETE FROM analytics.mv_patient_summary AS t
WHERE NOT EXISTS (SELECT FROM new_patient_summary AS n WHERE n.patient_id = t.patient_id);

CREATE TEMP TABLE new_branch_billing_summary ON COMMIT DROP AS
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
) AS s USING (branch_id);

INSERT INTO analytics.mv_branch_billing_summary AS t
       (branch_id, visit_count, patient_count, billed_amount, paid_amount, outstanding_amount,
        first_visit_date, last_visit_date)
SELECT branch_id, visit_count, patient_count, billed_amount, paid_amount, outstanding_amount,
       first_visit_date, last_visit_date
FROM new_branch_billing_summary
ON CONFLICT (branch_id) DO UPDATE
SET visit_count = excluded.visit_count,
    patient_count = excluded.patient_count,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    outstanding_amount = excluded.outstanding_amount,
    first_visit_date = excluded.first_visit_date,
    last_visit_date = excluded.last_visit_date
WHERE (t.visit_count, t.patient_count, t.billed_amount, t.paid_amount, t.outstanding_amount,
       t.first_visit_date, t.last_visit_date)
      IS DISTINCT FROM
      (excluded.visit_count, excluded.patient_count, excluded.billed_amount, excluded.paid_amount,
       excluded.outstanding_amount, excluded.first_visit_date, excluded.last_visit_date);

DELETE FROM analytics.mv_branch_billing_summary AS t
WHERE NOT EXISTS (SELECT FROM new_branch_billing_summary AS n WHERE n.branch_id = t.branch_id);
