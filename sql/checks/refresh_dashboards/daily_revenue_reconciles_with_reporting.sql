-- Per day, dashboards.daily_revenue holds exactly the visits, billed, paid and
-- outstanding amounts of reporting.revenue_summary over all branches.
WITH reporting AS (
    SELECT visit_date AS revenue_date, sum(visit_count) AS visit_count, sum(billed_amount) AS billed,
           sum(paid_amount) AS paid, sum(outstanding_amount) AS outstanding
    FROM reporting.revenue_summary
    GROUP BY visit_date
)
SELECT revenue_date
FROM reporting AS r
FULL JOIN dashboards.daily_revenue AS d USING (revenue_date)
WHERE (r.visit_count, r.billed, r.paid, r.outstanding)
      IS DISTINCT FROM (d.visit_count, d.billed_amount, d.paid_amount, d.outstanding_amount);
