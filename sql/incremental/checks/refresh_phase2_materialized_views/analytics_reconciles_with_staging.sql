-- analytics_reconciles_with_staging on an incremental night: every billing line and visit that
-- tonight's changes touch carries in analytics exactly staging's billed and paid amounts, and
-- exists there exactly when it exists in staging (a line whose visit is missing, a payment whose
-- line is missing: both differ). The keys come from change capture (pg_temp.changed_*), not from
-- the form's own lists, so a form that misses one (a refund ignored) is caught. Every other line
-- and visit reconciled on an earlier night and did not change since: staging's totals still equal
-- analytics'. Each table is read through its key's index, as the incremental form reads it (= ANY
-- of unique keys; a lateral sum per key where a key has many rows); the whole check scans them all
-- (0.6 s at 1M visits, 6 s at 10M).
WITH line_keys AS MATERIALIZED (
    SELECT billing_id FROM pg_temp.changed_billing
    UNION SELECT billing_id FROM pg_temp.changed_payments
    UNION SELECT b.billing_id FROM pg_temp.changed_visits AS c JOIN staging.billing AS b USING (visit_id)
), staging_lines AS MATERIALIZED (
    SELECT b.billing_id, b.visit_id, b.amount FROM staging.billing AS b
    WHERE b.billing_id = ANY (ARRAY(SELECT billing_id FROM line_keys))
), analytics_lines AS MATERIALIZED (
    SELECT a.billing_id, a.visit_id, a.billed_amount, a.paid_amount FROM analytics.mv_billing_summary AS a
    WHERE a.billing_id = ANY (ARRAY(SELECT billing_id FROM line_keys))
), visit_keys AS MATERIALIZED (
    SELECT visit_id FROM pg_temp.changed_visits
    UNION SELECT visit_id FROM pg_temp.changed_billing
    UNION SELECT visit_id FROM staging_lines
    UNION SELECT visit_id FROM analytics_lines
), staging_paid AS MATERIALIZED (  -- per touched line
    SELECT k.billing_id, p.paid
    FROM line_keys AS k
    CROSS JOIN LATERAL (SELECT sum(amount) AS paid FROM staging.payments WHERE billing_id = k.billing_id) AS p
), staging_visits AS MATERIALIZED (
    SELECT v.visit_id FROM staging.visits AS v WHERE v.visit_id = ANY (ARRAY(SELECT visit_id FROM visit_keys))
), staging_visit_amounts AS MATERIALIZED (  -- per touched visit, its lines and their payments
    SELECT k.visit_id, m.billed, m.paid
    FROM visit_keys AS k
    CROSS JOIN LATERAL (
        SELECT sum(b.amount) AS billed, sum(p.paid) AS paid
        FROM staging.billing AS b
        CROSS JOIN LATERAL (SELECT sum(amount) AS paid FROM staging.payments WHERE billing_id = b.billing_id) AS p
        WHERE b.visit_id = k.visit_id
    ) AS m
), analytics_visits AS MATERIALIZED (
    SELECT a.visit_id, a.billed_amount, a.paid_amount FROM analytics.mv_visit_summary AS a
    WHERE a.visit_id = ANY (ARRAY(SELECT visit_id FROM visit_keys))
)
SELECT 'billing line' AS measure
FROM line_keys AS k
LEFT JOIN staging_lines AS s USING (billing_id)
LEFT JOIN staging_paid AS p USING (billing_id)
LEFT JOIN analytics_lines AS a USING (billing_id)
WHERE (s.billing_id IS NOT NULL, coalesce(s.amount, 0), coalesce(p.paid, 0))
      IS DISTINCT FROM (a.billing_id IS NOT NULL, coalesce(a.billed_amount, 0), coalesce(a.paid_amount, 0))
UNION ALL
SELECT 'visit'
FROM visit_keys AS k
LEFT JOIN staging_visits AS s USING (visit_id)
LEFT JOIN staging_visit_amounts AS m USING (visit_id)
LEFT JOIN analytics_visits AS a USING (visit_id)
WHERE (s.visit_id IS NOT NULL, coalesce(m.billed, 0), coalesce(m.paid, 0))
      IS DISTINCT FROM (a.visit_id IS NOT NULL, coalesce(a.billed_amount, 0), coalesce(a.paid_amount, 0));
