-- Within reporting: each branch's visits, billed, paid and outstanding equal the sum
-- of its revenue_summary rows, and the patients' billed and paid add up to the same
-- grand totals. Catches a join that drops or doubles rows in one table only.
WITH by_branch AS (
    SELECT branch_id, sum(visit_count) AS visit_count, sum(billed_amount) AS billed,
           sum(paid_amount) AS paid, sum(outstanding_amount) AS outstanding
    FROM reporting.revenue_summary
    GROUP BY branch_id
), grand AS (
    SELECT coalesce(sum(billed_amount), 0) AS billed, coalesce(sum(paid_amount), 0) AS paid
    FROM reporting.revenue_summary
), patients AS (
    SELECT coalesce(sum(total_billed), 0) AS billed, coalesce(sum(total_paid), 0) AS paid
    FROM reporting.patient_summary
)
SELECT 'branch ' || coalesce(s.branch_id, r.branch_id) AS mismatch
FROM reporting.branch_summary AS s
FULL JOIN by_branch AS r USING (branch_id)
WHERE (coalesce(s.visit_count, 0), coalesce(s.total_billed, 0), coalesce(s.total_paid, 0),
       coalesce(s.total_outstanding, 0))
      IS DISTINCT FROM
      (coalesce(r.visit_count, 0), coalesce(r.billed, 0), coalesce(r.paid, 0), coalesce(r.outstanding, 0))
UNION ALL
SELECT 'patient totals'
FROM grand, patients
WHERE (grand.billed, grand.paid) IS DISTINCT FROM (patients.billed, patients.paid);
