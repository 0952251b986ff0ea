-- Keys: every analytics view keeps a valid unique index on its key (REFRESH ...
-- CONCURRENTLY needs it, and it is what makes the key unique), and no key is NULL
-- (a unique index admits any number of NULLs).
SELECT view_name, problem
FROM (
    VALUES ('analytics.mv_billing_summary'), ('analytics.mv_visit_summary'),
           ('analytics.mv_patient_summary'), ('analytics.mv_branch_billing_summary')
) AS v (view_name)
CROSS JOIN LATERAL (
    SELECT 'no valid unique index' AS problem
    WHERE NOT EXISTS (
        SELECT FROM pg_index AS i
        WHERE i.indrelid = to_regclass(v.view_name) AND i.indisunique AND i.indisvalid
    )
) AS missing_index
UNION ALL
SELECT 'analytics.mv_billing_summary', 'NULL billing_id'
WHERE EXISTS (SELECT FROM analytics.mv_billing_summary WHERE billing_id IS NULL)
UNION ALL
SELECT 'analytics.mv_visit_summary', 'NULL visit_id'
WHERE EXISTS (SELECT FROM analytics.mv_visit_summary WHERE visit_id IS NULL)
UNION ALL
SELECT 'analytics.mv_patient_summary', 'NULL patient_id'
WHERE EXISTS (SELECT FROM analytics.mv_patient_summary WHERE patient_id IS NULL)
UNION ALL
SELECT 'analytics.mv_branch_billing_summary', 'NULL branch_id'
WHERE EXISTS (SELECT FROM analytics.mv_branch_billing_summary WHERE branch_id IS NULL);
