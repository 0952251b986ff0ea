-- Step 2, incremental form: the reporting tables, for what the analytics step changed since this
-- step last ran (the full form: ../refresh_phase3_reporting_tables.sql; the two must agree row for
-- row, which tests/test_incremental_property.py proves and every periodic full run checks).
--
-- The engine has taken the changed keys, in this transaction, into pg_temp.changed_<table>:
-- pg_temp.changed_mv_patient_summary (patient_id), pg_temp.changed_mv_visit_summary (visit_date,
-- branch_id), and staging's patients, branches and doctors (sql/incremental/capture.sql). A
-- patient is recomputed when its analytics row, its own row or its home branch changed; a day of
-- revenue at a branch moves by the delta of its visits. branch_summary, one row per branch, is
-- recomputed whole.

CREATE TEMP TABLE touched_patients ON COMMIT DROP AS
SELECT patient_id FROM pg_temp.changed_mv_patient_summary
UNION SELECT patient_id FROM pg_temp.changed_patients
UNION SELECT p.patient_id FROM staging.patients AS p
      WHERE p.home_branch_id IN (SELECT branch_id FROM pg_temp.changed_branches);
ANALYZE touched_patients;

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
JOIN staging.branches AS b ON b.branch_id = p.home_branch_id
WHERE s.patient_id IN (SELECT patient_id FROM touched_patients);

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
WHERE t.patient_id IN (SELECT patient_id FROM touched_patients EXCEPT SELECT patient_id FROM new_patient_summary);

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

-- Revenue by delta: each (day, branch) group moves by what its visits gained and lost since this
-- step last ran, as capture logged them (pg_temp.changed_mv_visit_summary: per group, row_change
-- and <column>_change, the new rows' values less the old ones'); a group with no row yet starts
-- from zero; one left with no visit is deleted. Reading each touched group's visits instead costs
-- what the full form does once a night's changes spread over the history (1 % of the visits
-- touch 80 % of the groups).
CREATE TEMP TABLE new_revenue_summary ON COMMIT DROP AS
SELECT d.visit_date,
       d.branch_id,
       coalesce(r.visit_count, 0) + d.row_change                       AS visit_count,
       coalesce(r.billed_amount, 0) + d.billed_amount_change           AS billed_amount,
       coalesce(r.paid_amount, 0) + d.paid_amount_change               AS paid_amount,
       coalesce(r.outstanding_amount, 0) + d.outstanding_amount_change AS outstanding_amount
FROM pg_temp.changed_mv_visit_summary AS d
LEFT JOIN reporting.revenue_summary AS r USING (visit_date, branch_id);

INSERT INTO reporting.revenue_summary AS t
       (visit_date, branch_id, visit_count, billed_amount, paid_amount, outstanding_amount)
SELECT visit_date, branch_id, visit_count, billed_amount, paid_amount, outstanding_amount
FROM new_revenue_summary
WHERE visit_count > 0
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
USING new_revenue_summary AS n
WHERE t.visit_date = n.visit_date AND t.branch_id = n.branch_id AND n.visit_count <= 0;
