-- Outstanding is what is still collectible; below zero it means payments exceed
-- what was billed (a refund or a duplicate payment gone wrong upstream).
SELECT 'revenue_summary' AS table_name
FROM reporting.revenue_summary WHERE outstanding_amount < 0
UNION ALL
SELECT 'branch_summary' FROM reporting.branch_summary WHERE total_outstanding < 0
UNION ALL
SELECT 'patient_summary' FROM reporting.patient_summary WHERE total_unpaid < 0;
