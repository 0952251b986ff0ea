-- Per visit date and branch, reporting.revenue_summary holds exactly the visits,
-- billed, paid and outstanding amounts of analytics.mv_visit_summary: no day or
-- branch lost, none invented, no amount changed on the way.
WITH analytics AS (
    SELECT visit_date, branch_id, count(*) AS visit_count, sum(billed_amount) AS billed_amount,
           sum(paid_amount) AS paid_amount, sum(outstanding_amount) AS outstanding_amount
    FROM analytics.mv_visit_summary
    GROUP BY visit_date, branch_id
)
SELECT visit_date, branch_id
FROM analytics AS a
FULL JOIN reporting.revenue_summary AS r USING (visit_date, branch_id)
WHERE (a.visit_count, a.billed_amount, a.paid_amount, a.outstanding_amount)
      IS DISTINCT FROM (r.visit_count, r.billed_amount, r.paid_amount, r.outstanding_amount);
