-- Per branch, dashboards.branch_performance shows exactly the visits, patients,
-- billed and paid amounts of reporting.branch_summary.
SELECT branch_id
FROM reporting.branch_summary AS s
FULL JOIN dashboards.branch_performance AS d USING (branch_id)
WHERE (s.visit_count, s.patient_count, s.total_billed, s.total_paid)
      IS DISTINCT FROM (d.visit_count, d.patient_count, d.billed_amount, d.paid_amount);
