-- Step 1, incremental form: the analytics tables, for what changed in staging since this step
-- last ran (the full form: ../refresh_phase2_materialized_views.sql; the two must agree row for
-- row, which tests/test_incremental_property.py proves and every periodic full run checks).
--
-- The engine has taken staging's changed keys, in this transaction, into pg_temp.changed_<table>:
-- old and new values of every key a change can move (sql/incremental/capture.sql). Each table is
-- recomputed, with its full form's query, for the keys those touch, then merged the same way:
-- billing lines whose bill, payments or visit changed; visits whose row or lines changed; patients
-- whose row or visits changed. The branch table (a few rows, each over a large share of the
-- visits) moves by delta: counts and sums by what tonight's visits add and remove, distinct
-- patients by whether each touched (branch, patient) pair exists before and after, first and last
-- visit dates from the (branch_id, visit_date) index. A branch with no row yet is computed whole.
--
-- A large table is read for a list of unique keys as `key = ANY (ARRAY(SELECT ...))`, not
-- `IN (SELECT ...)`: the planner costs twenty thousand index probes above one scan of two million
-- rows and hashes the whole table for an IN (0.35 s at 1M visits, ten times that at 10M); an array
-- is probed through the key's index (0.05 s). Not for a key with many rows each (a patient's
-- visits, a visit's lines): the planner reads those through a bitmap, which for a hundred thousand
-- keys outgrows work_mem and turns lossy, and PostgreSQL then tests every row of each lossy page
-- against the array one element after another (at 10M visits, 1 % changed: over ten minutes for
-- one statement). Those are summed per key in a LATERAL subquery: one index probe per key.

CREATE TEMP TABLE touched_billing ON COMMIT DROP AS
SELECT billing_id FROM pg_temp.changed_billing
UNION SELECT billing_id FROM pg_temp.changed_payments
UNION SELECT b.billing_id FROM pg_temp.changed_visits AS c JOIN staging.billing AS b USING (visit_id);
ANALYZE touched_billing;

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
CROSS JOIN LATERAL (
    SELECT sum(pay.amount) AS paid_amount FROM staging.payments AS pay WHERE pay.billing_id = b.billing_id
) AS p
WHERE b.billing_id = ANY (ARRAY(SELECT billing_id FROM touched_billing));
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

-- The touched keys that are gone, counted first: the planner then probes the key's index for
-- the few there are (usually none) instead of scanning the whole table for them.
CREATE TEMP TABLE gone_billing ON COMMIT DROP AS
SELECT billing_id FROM touched_billing EXCEPT SELECT billing_id FROM new_billing_summary;
ANALYZE gone_billing;

DELETE FROM analytics.mv_billing_summary AS t
WHERE t.billing_id IN (SELECT billing_id FROM gone_billing);

CREATE TEMP TABLE touched_visits ON COMMIT DROP AS
SELECT visit_id FROM pg_temp.changed_visits
UNION SELECT visit_id FROM pg_temp.changed_billing
UNION SELECT visit_id FROM new_billing_summary;
ANALYZE touched_visits;

-- The touched visits as they were: what the branch deltas take away.
CREATE TEMP TABLE old_visit_summary ON COMMIT DROP AS
SELECT visit_id, patient_id, branch_id, billed_amount, paid_amount, outstanding_amount
FROM analytics.mv_visit_summary
WHERE visit_id = ANY (ARRAY(SELECT visit_id FROM touched_visits));

CREATE TEMP TABLE new_visit_summary ON COMMIT DROP AS
SELECT v.visit_id,
       v.patient_id,
       v.doctor_id,
       v.branch_id,
       v.visit_date,
       v.visit_type,
       b.billing_lines,
       coalesce(b.billed_amount, 0)             AS billed_amount,
       coalesce(b.paid_amount, 0)               AS paid_amount,
       coalesce(b.outstanding_amount, 0)        AS outstanding_amount
FROM staging.visits AS v
CROSS JOIN LATERAL (
    SELECT count(*)                AS billing_lines,
           sum(a.billed_amount)    AS billed_amount,
           sum(a.paid_amount)      AS paid_amount,
           sum(a.outstanding_amount) AS outstanding_amount
    FROM analytics.mv_billing_summary AS a
    WHERE a.visit_id = v.visit_id
) AS b
WHERE v.visit_id = ANY (ARRAY(SELECT visit_id FROM touched_visits));
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

CREATE TEMP TABLE gone_visits ON COMMIT DROP AS
SELECT visit_id FROM touched_visits EXCEPT SELECT visit_id FROM new_visit_summary;
ANALYZE gone_visits;

DELETE FROM analytics.mv_visit_summary AS t
WHERE t.visit_id IN (SELECT visit_id FROM gone_visits);

CREATE TEMP TABLE touched_patients ON COMMIT DROP AS
SELECT patient_id FROM pg_temp.changed_patients
UNION SELECT patient_id FROM pg_temp.changed_visits
UNION SELECT patient_id FROM old_visit_summary
UNION SELECT patient_id FROM new_visit_summary;
ANALYZE touched_patients;

CREATE TEMP TABLE new_patient_summary ON COMMIT DROP AS
SELECT p.patient_id,
       coalesce(s.visit_count, 0)     AS visit_count,
       s.first_visit_date,
       s.last_visit_date,
       coalesce(s.billed_amount, 0)   AS billed_amount,
       coalesce(s.paid_amount, 0)     AS paid_amount,
       coalesce(s.unpaid_amount, 0)   AS unpaid_amount
FROM staging.patients AS p
CROSS JOIN LATERAL (
    SELECT count(*)                  AS visit_count,
           min(v.visit_date)         AS first_visit_date,
           max(v.visit_date)         AS last_visit_date,
           sum(v.billed_amount)      AS billed_amount,
           sum(v.paid_amount)        AS paid_amount,
           sum(v.outstanding_amount) AS unpaid_amount
    FROM analytics.mv_visit_summary AS v
    WHERE v.patient_id = p.patient_id
) AS s
WHERE p.patient_id = ANY (ARRAY(SELECT patient_id FROM touched_patients));

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
WHERE t.patient_id IN (SELECT patient_id FROM touched_patients EXCEPT SELECT patient_id FROM new_patient_summary);

-- What tonight's visits add to each branch, and take away: visits and amounts.
CREATE TEMP TABLE branch_deltas ON COMMIT DROP AS
SELECT branch_id,
       sum(visits)      AS visit_count,
       sum(billed)      AS billed_amount,
       sum(paid)        AS paid_amount,
       sum(outstanding) AS outstanding_amount
FROM (
    SELECT branch_id, 1 AS visits, billed_amount AS billed, paid_amount AS paid,
           outstanding_amount AS outstanding
    FROM new_visit_summary
    UNION ALL
    SELECT branch_id, -1, -billed_amount, -paid_amount, -outstanding_amount
    FROM old_visit_summary
) AS change
GROUP BY branch_id;

-- Distinct patients: a (branch, patient) pair among tonight's new visits and not among their old
-- ones counts +1, the other way round -1, unless a visit tonight left alone holds the pair (it was
-- there before and still is). A pair among both counts 0 and is looked up nowhere.
CREATE TEMP TABLE branch_patient_deltas ON COMMIT DROP AS
SELECT pair.branch_id, sum(pair.sign) AS patient_count
FROM (
    SELECT branch_id, patient_id, 1 AS sign
    FROM (SELECT branch_id, patient_id FROM new_visit_summary
          EXCEPT SELECT branch_id, patient_id FROM old_visit_summary) AS gained
    UNION ALL
    SELECT branch_id, patient_id, -1
    FROM (SELECT branch_id, patient_id FROM old_visit_summary
          EXCEPT SELECT branch_id, patient_id FROM new_visit_summary) AS lost
) AS pair
WHERE pair.branch_id IS NOT NULL AND pair.patient_id IS NOT NULL  -- count(DISTINCT) counts no NULL
  AND NOT EXISTS (
      SELECT FROM analytics.mv_visit_summary AS v
      WHERE v.branch_id = pair.branch_id AND v.patient_id = pair.patient_id
        AND NOT EXISTS (SELECT FROM touched_visits AS t WHERE t.visit_id = v.visit_id)
  )
GROUP BY pair.branch_id;

CREATE TEMP TABLE touched_branches ON COMMIT DROP AS
SELECT branch_id FROM pg_temp.changed_branches
UNION SELECT branch_id FROM branch_deltas;

-- Touched branches with no row yet (a new branch): computed whole, from their own visits only.
CREATE TEMP TABLE unrecorded_branches ON COMMIT DROP AS
SELECT branch_id FROM touched_branches AS b
WHERE NOT EXISTS (SELECT FROM analytics.mv_branch_billing_summary AS o WHERE o.branch_id = b.branch_id);

CREATE TEMP TABLE new_branch_billing_summary ON COMMIT DROP AS
SELECT br.branch_id,
       o.visit_count + coalesce(d.visit_count, 0)               AS visit_count,
       o.patient_count + coalesce(pd.patient_count, 0)          AS patient_count,
       o.billed_amount + coalesce(d.billed_amount, 0)           AS billed_amount,
       o.paid_amount + coalesce(d.paid_amount, 0)               AS paid_amount,
       o.outstanding_amount + coalesce(d.outstanding_amount, 0) AS outstanding_amount,
       (SELECT min(visit_date) FROM analytics.mv_visit_summary AS v WHERE v.branch_id = br.branch_id)
           AS first_visit_date,
       (SELECT max(visit_date) FROM analytics.mv_visit_summary AS v WHERE v.branch_id = br.branch_id)
           AS last_visit_date
FROM staging.branches AS br
JOIN analytics.mv_branch_billing_summary AS o USING (branch_id)
LEFT JOIN branch_deltas AS d USING (branch_id)
LEFT JOIN branch_patient_deltas AS pd USING (branch_id)
WHERE br.branch_id IN (SELECT branch_id FROM touched_branches)
UNION ALL
SELECT br.branch_id,
       coalesce(s.visit_count, 0),
       coalesce(s.patient_count, 0),
       coalesce(s.billed_amount, 0),
       coalesce(s.paid_amount, 0),
       coalesce(s.outstanding_amount, 0),
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
    WHERE branch_id IN (SELECT branch_id FROM unrecorded_branches)
    GROUP BY branch_id
) AS s USING (branch_id)
WHERE br.branch_id IN (SELECT branch_id FROM unrecorded_branches);

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
WHERE t.branch_id IN (SELECT branch_id FROM touched_branches)
  AND NOT EXISTS (SELECT FROM new_branch_billing_summary AS n WHERE n.branch_id = t.branch_id);
