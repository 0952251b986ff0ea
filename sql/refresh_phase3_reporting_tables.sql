-- Step 2 of the nightly refresh: the phase 3 reporting tables, from the
-- analytics materialized views.
--
-- Pattern: compute, then merge. Each table's new contents are computed into a
-- temporary table; an upsert then changes only the rows whose values differ,
-- and a delete removes the rows that no longer exist. Writers take ROW
-- EXCLUSIVE locks, which never conflict with readers' ACCESS SHARE, and MVCC
-- shows readers the previous, complete contents until the step commits: no
-- reader waits and none sees an empty or half-filled table. (The Airflow
-- version's TRUNCATE took ACCESS EXCLUSIVE and blocked every reader instead.)
-- Rows that did not change are not rewritten, so updated_at tells what moved.
--
-- The whole file runs in one transaction: if any statement fails, every table
-- keeps the previous refresh's rows.

CREATE TEMP TABLE new_patient_summary ON COMMIT DROP AS
SELECT p.patient_id,
       p.full_name,
       b.branch_name AS home_branch_name,
       s.visit_count,
       s.first_visit_date,
       s.last_visit_date,
       s.billed_amount AS total_billed,
       s.paid_amount   AS total_paid,
       s.unpaid_amount AS total_unpaid
FROM analytics.mv_patient_summary AS s
JOIN staging.patients AS p USING (patient_id)
JOIN staging.branches AS b ON b.branch_id = p.home_branch_id;
ANALYZE new_patient_summary;

INSERT INTO reporting.patient_summary AS t
       (patient_id, full_name, home_branch_name, visit_count, first_visit_date,
        last_visit_date, total_billed, total_paid, total_unpaid)
SELECT patient_id, full_name, home_branch_name, visit_count, first_visit_date,
       last_visit_date, total_billed, total_paid, total_unpaid
FROM new_patient_summary
ON CONFLICT (patient_id) DO UPDATE
SET full_name = excluded.full_name,
    home_branch_name = excluded.home_branch_name,
    visit_count = excluded.visit_count,
    first_visit_date = excluded.first_visit_date,
    last_visit_date = excluded.last_visit_date,
    total_billed = excluded.total_billed,
    total_paid = excluded.total_paid,
    total_unpaid = excluded.total_unpaid,
    updated_at = now()
WHERE (t.full_name, t.home_branch_name, t.visit_count, t.first_visit_date,
       t.last_visit_date, t.total_billed, t.total_paid, t.total_unpaid)
      IS DISTINCT FROM
      (excluded.full_name, excluded.home_branch_name, excluded.visit_count, excluded.first_visit_date,
       excluded.last_visit_date, excluded.total_billed, excluded.total_paid, excluded.total_unpaid);

DELETE FROM reporting.patient_summary AS t
WHERE NOT EXISTS (SELECT FROM new_patient_summary AS n WHERE n.patient_id = t.patient_id);

CREATE TEMP TABLE new_branch_summary ON COMMIT DROP AS
SELECT br.branch_id,
       br.branch_name,
       br.city,
       (SELECT count(*) FROM staging.doctors AS d WHERE d.branch_id = br.branch_id) AS doctor_count,
       s.patient_count,
       s.visit_count,
       s.billed_amount      AS total_billed,
       s.paid_amount        AS total_paid,
       s.outstanding_amount AS total_outstanding,
       s.first_visit_date,
       s.last_visit_date
FROM analytics.mv_branch_billing_summary AS s
JOIN staging.branches AS br USING (branch_id);

INSERT INTO reporting.branch_summary AS t
       (branch_id, branch_name, city, doctor_count, patient_count, visit_count,
        total_billed, total_paid, total_outstanding, first_visit_date, last_visit_date)
SELECT branch_id, branch_name, city, doctor_count, patient_count, visit_count,
       total_billed, total_paid, total_outstanding, first_visit_date, last_visit_date
FROM new_branch_summary
ON CONFLICT (branch_id) DO UPDATE
SET branch_name = excluded.branch_name,
    city = excluded.city,
    doctor_count = excluded.doctor_count,
    patient_count = excluded.patient_count,
    visit_count = excluded.visit_count,
    total_billed = excluded.total_billed,
    total_paid = excluded.total_paid,
    total_outstanding = excluded.total_outstanding,
    first_visit_date = excluded.first_visit_date,
    last_visit_date = excluded.last_visit_date,
    updated_at = now()
WHERE (t.branch_name, t.city, t.doctor_count, t.patient_count, t.visit_count, t.total_billed,
       t.total_paid, t.total_outstanding, t.first_visit_date, t.last_visit_date)
      IS DISTINCT FROM
      (excluded.branch_name, excluded.city, excluded.doctor_count, excluded.patient_count,
       excluded.visit_count, excluded.total_billed, excluded.total_paid, excluded.total_outstanding,
       excluded.first_visit_date, excluded.last_visit_date);

DELETE FROM reporting.branch_summary AS t
WHERE NOT EXISTS (SELECT FROM new_branch_summary AS n WHERE n.branch_id = t.branch_id);

CREATE TEMP TABLE new_revenue_summary ON COMMIT DROP AS
SELECT visit_date,
       branch_id,
       count(*)                AS visit_count,
       sum(billed_amount)      AS billed_amount,
       sum(paid_amount)        AS paid_amount,
       sum(outstanding_amount) AS outstanding_amount
FROM analytics.mv_visit_summary
GROUP BY visit_date, branch_id;
ANALYZE new_revenue_summary;

INSERT INTO reporting.revenue_summary AS t
       (visit_date, branch_id, visit_count, billed_amount, paid_amount, outstanding_amount)
SELECT visit_date, branch_id, visit_count, billed_amount, paid_amount, outstanding_amount
FROM new_revenue_summary
ON CONFLICT (visit_date, branch_id) DO UPDATE
SET visit_count = excluded.visit_count,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    outstanding_amount = excluded.outstanding_amount,
    updated_at = now()
WHERE (t.visit_count, t.billed_amount, t.paid_amount, t.outstanding_amount)
      IS DISTINCT FROM
      (excluded.visit_count, excluded.billed_amount, excluded.paid_amount, excluded.outstanding_amount);

DELETE FROM reporting.revenue_summary AS t
WHERE NOT EXISTS (
    SELECT FROM new_revenue_summary AS n
    WHERE n.visit_date = t.visit_date AND n.branch_id = t.branch_id
);
