-- Keys: every analytics view keeps a valid unique index on its key (REFRESH ...
-- CONCURRENTLY needs it, and it is what makes the key unique), and no key of
-- mv_billing_summary or mv_visit_summary is NULL (a unique index admits any number of
-- NULLs). The two per-patient and per-branch views check their own keys
-- (*_counts_every_visit.sql): the index test reads only the catalog, so this check
-- ties no views together for parallel_views.
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
WHERE EXISTS (SELECT FROM analytics.mv_visit_summary WHERE visit_id IS NULL);
