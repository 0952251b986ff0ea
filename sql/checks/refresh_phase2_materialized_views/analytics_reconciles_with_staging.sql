-- Every staging visit, billing line and payment reaches analytics: counts and billed
-- and paid totals of mv_billing_summary and mv_visit_summary equal staging's. A
-- billing line whose visit is missing (possible where staging has no foreign keys)
-- would otherwise drop silently out of every report.
WITH billing AS (
    SELECT count(*) AS billing_lines, coalesce(sum(amount), 0) AS billed FROM staging.billing
), staging_totals AS MATERIALIZED (
    -- One scan per table: the largest ones hold millions of rows. MATERIALIZED, or
    -- PostgreSQL inlines it and runs the payments subquery once per row that uses it.
    SELECT (SELECT count(*) FROM staging.visits)                  AS visits,
           billing.billing_lines,
           billing.billed,
           (SELECT coalesce(sum(amount), 0) FROM staging.payments) AS paid
    FROM billing
), billing_totals AS (
    SELECT count(*) AS billing_lines, coalesce(sum(billed_amount), 0) AS billed,
           coalesce(sum(paid_amount), 0) AS paid
    FROM analytics.mv_billing_summary
), visit_totals AS (
    SELECT count(*) AS visits, coalesce(sum(billed_amount), 0) AS billed,
           coalesce(sum(paid_amount), 0) AS paid
    FROM analytics.mv_visit_summary
)
SELECT m.measure, m.in_staging, m.in_analytics
FROM staging_totals AS s, billing_totals AS b, visit_totals AS v,
     LATERAL (
         VALUES ('billing lines', s.billing_lines::numeric, b.billing_lines::numeric),
                ('billed, per billing line', s.billed, b.billed),
                ('paid, per billing line', s.paid, b.paid),
                ('visits', s.visits::numeric, v.visits::numeric),
                ('billed, per visit', s.billed, v.billed),
                ('paid, per visit', s.paid, v.paid)
     ) AS m (measure, in_staging, in_analytics)
WHERE m.in_staging IS DISTINCT FROM m.in_analytics;
