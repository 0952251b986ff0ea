-- Every visit belongs to a known branch: mv_branch_billing_summary (one row per staging
-- branch) counts every staging visit, and no branch_id is NULL (its unique index admits
-- any number of NULLs). A visit whose branch is missing (possible where staging has no
-- foreign keys) would count in the totals but in no branch's row.
-- It compares with staging, not mv_visit_summary, for the reason given in
-- patient_summary_counts_every_visit.sql.
SELECT 'visits counted per branch' AS problem
WHERE (SELECT count(*) FROM staging.visits)
      <> (SELECT coalesce(sum(visit_count), 0) FROM analytics.mv_branch_billing_summary)
UNION ALL
SELECT 'NULL branch_id'
WHERE EXISTS (SELECT FROM analytics.mv_branch_billing_summary WHERE branch_id IS NULL);
