-- Step 3, incremental form: the dashboard tables, for what the reporting step changed since this
-- step last ran (the full form: ../refresh_dashboards.sql; the two must agree row for row, which
-- tests/test_incremental_property.py proves and every periodic full run checks).
--
-- The engine has taken the reporting tables' changed keys, in this transaction, into
-- pg_temp.changed_revenue_summary (visit_date, branch_id), pg_temp.changed_patient_summary
-- (patient_id) and pg_temp.changed_branch_summary (branch_id): old and new keys of every row the
-- reporting step inserted, updated or deleted. The same compute-then-merge as the full form, over
-- the touched keys only: a day of revenue for each changed date, the activity of each changed
-- patient. branch_performance, one row per branch ranked against the others, is recomputed whole.
-- Recency is measured against the newest visit: when that moves, every patient is touched.

CREATE TEMP TABLE touched_dates ON COMMIT DROP AS
SELECT DISTINCT visit_date FROM pg_temp.changed_revenue_summary;

CREATE TEMP TABLE new_daily_revenue ON COMMIT DROP AS
SELECT visit_date              AS revenue_date,
       sum(visit_count)        AS visit_count,
       sum(billed_amount)      AS billed_amount,
       sum(paid_amount)        AS paid_amount,
       sum(outstanding_amount) AS outstanding_amount,
       round(sum(paid_amount) / nullif(sum(billed_amount), 0), 4) AS collection_rate
FROM reporting.revenue_summary
WHERE visit_date IN (SELECT visit_date FROM touched_dates)
GROUP BY visit_date;

INSERT INTO dashboards.daily_revenue AS t
       (revenue_date, visit_count, billed_amount, paid_amount, outstanding_amount, collection_rate)
SELECT revenue_date, visit_count, billed_amount, paid_amount, outstanding_amount, collection_rate
FROM new_daily_revenue
ON CONFLICT (revenue_date) DO UPDATE
SET visit_count = excluded.visit_count,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    outstanding_amount = excluded.outstanding_amount,
    collection_rate = excluded.collection_rate,
    updated_at = now()
WHERE (t.visit_count, t.billed_amount, t.paid_amount, t.outstanding_amount, t.collection_rate)
      IS DISTINCT FROM
      (excluded.visit_count, excluded.billed_amount, excluded.paid_amount,
       excluded.outstanding_amount, excluded.collection_rate);

DELETE FROM dashboards.daily_revenue AS t
WHERE t.revenue_date IN (SELECT visit_date FROM touched_dates)
  AND NOT EXISTS (SELECT FROM new_daily_revenue AS n WHERE n.revenue_date = t.revenue_date);

CREATE TEMP TABLE new_branch_performance ON COMMIT DROP AS
SELECT branch_id,
       branch_name,
       city,
       visit_count,
       patient_count,
       total_billed AS billed_amount,
       total_paid   AS paid_amount,
       round(total_paid / nullif(total_billed, 0), 4)  AS collection_rate,
       round(total_billed / nullif(visit_count, 0), 2) AS avg_billed_per_visit,
       rank() OVER (ORDER BY total_billed DESC)        AS revenue_rank
FROM reporting.branch_summary;

INSERT INTO dashboards.branch_performance AS t
       (branch_id, branch_name, city, visit_count, patient_count, billed_amount,
        paid_amount, collection_rate, avg_billed_per_visit, revenue_rank)
SELECT branch_id, branch_name, city, visit_count, patient_count, billed_amount,
       paid_amount, collection_rate, avg_billed_per_visit, revenue_rank
FROM new_branch_performance
ON CONFLICT (branch_id) DO UPDATE
SET branch_name = excluded.branch_name,
    city = excluded.city,
    visit_count = excluded.visit_count,
    patient_count = excluded.patient_count,
    billed_amount = excluded.billed_amount,
    paid_amount = excluded.paid_amount,
    collection_rate = excluded.collection_rate,
    avg_billed_per_visit = excluded.avg_billed_per_visit,
    revenue_rank = excluded.revenue_rank,
    updated_at = now()
WHERE (t.branch_name, t.city, t.visit_count, t.patient_count, t.billed_amount, t.paid_amount,
       t.collection_rate, t.avg_billed_per_visit, t.revenue_rank)
      IS DISTINCT FROM
      (excluded.branch_name, excluded.city, excluded.visit_count, excluded.patient_count,
       excluded.billed_amount, excluded.paid_amount, excluded.collection_rate,
       excluded.avg_billed_per_visit, excluded.revenue_rank);

DELETE FROM dashboards.branch_performance AS t
WHERE NOT EXISTS (SELECT FROM new_branch_performance AS n WHERE n.branch_id = t.branch_id);

-- Segments as in the full form. The newest visit the stored rows were measured against is
-- last_visit_date + days_since_last_visit of any visited patient; when it moved (new visits after
-- the newest, most nights) every visited patient's recency changed, and the whole table is
-- recomputed as the full form does (moved is evaluated once, so that costs what full costs).
CREATE TEMP TABLE recency ON COMMIT DROP AS
SELECT (SELECT max(last_visit_date) FROM reporting.patient_summary)
       IS DISTINCT FROM
       (SELECT max(last_visit_date + days_since_last_visit) FROM dashboards.patient_activity) AS moved;

CREATE TEMP TABLE new_patient_activity ON COMMIT DROP AS
WITH as_of AS (SELECT max(last_visit_date) AS newest_visit FROM reporting.patient_summary)
SELECT s.patient_id,
       s.full_name,
       s.visit_count,
       s.last_visit_date,
       as_of.newest_visit - s.last_visit_date AS days_since_last_visit,
       CASE WHEN s.visit_count = 0 THEN 'never_visited'
            WHEN as_of.newest_visit - s.last_visit_date > 365 THEN 'lapsed'
            WHEN s.visit_count >= 20 THEN 'frequent'
            WHEN s.visit_count >= 5 THEN 'regular'
            ELSE 'occasional' END AS activity_segment,
       s.total_billed,
       s.total_unpaid
FROM reporting.patient_summary AS s
CROSS JOIN as_of
WHERE (SELECT moved FROM recency)
   OR s.patient_id IN (SELECT patient_id FROM pg_temp.changed_patient_summary);
ANALYZE new_patient_activity;

INSERT INTO dashboards.patient_activity AS t
       (patient_id, full_name, visit_count, last_visit_date, days_since_last_visit,
        activity_segment, total_billed, total_unpaid)
SELECT patient_id, full_name, visit_count, last_visit_date, days_since_last_visit,
       activity_segment, total_billed, total_unpaid
FROM new_patient_activity
ON CONFLICT (patient_id) DO UPDATE
SET full_name = excluded.full_name,
    visit_count = excluded.visit_count,
    last_visit_date = excluded.last_visit_date,
    days_since_last_visit = excluded.days_since_last_visit,
    activity_segment = excluded.activity_segment,
    total_billed = excluded.total_billed,
    total_unpaid = excluded.total_unpaid,
    updated_at = now()
WHERE (t.full_name, t.visit_count, t.last_visit_date, t.days_since_last_visit,
       t.activity_segment, t.total_billed, t.total_unpaid)
      IS DISTINCT FROM
      (excluded.full_name, excluded.visit_count, excluded.last_visit_date,
       excluded.days_since_last_visit, excluded.activity_segment, excluded.total_billed,
       excluded.total_unpaid);

DELETE FROM dashboards.patient_activity AS t
WHERE ((SELECT moved FROM recency) OR t.patient_id IN (SELECT patient_id FROM pg_temp.changed_patient_summary))
  AND NOT EXISTS (SELECT FROM new_patient_activity AS n WHERE n.patient_id = t.patient_id);
