-- Every visit belongs to a known patient: mv_patient_summary (one row per staging
-- patient) counts every staging visit, and no patient_id is NULL (its unique index
-- admits any number of NULLs). A visit whose patient is missing (possible where staging
-- has no foreign keys) would count in the totals but in no patient's row.
-- It compares with staging, not mv_visit_summary (which analytics_reconciles_with_staging
-- holds to staging): a check that reads two views makes them one group for
-- parallel_views, and this view can then refresh beside mv_branch_billing_summary.
SELECT 'visits counted per patient' AS problem
WHERE (SELECT count(*) FROM staging.visits)
      <> (SELECT coalesce(sum(visit_count), 0) FROM analytics.mv_patient_summary)
UNION ALL
SELECT 'NULL patient_id'
WHERE EXISTS (SELECT FROM analytics.mv_patient_summary WHERE patient_id IS NULL);
