-- Every visit belongs to a known patient and branch: mv_patient_summary (one row per
-- staging patient) and mv_branch_billing_summary (one row per staging branch) count
-- every visit of mv_visit_summary. A visit whose patient or branch is missing (possible
-- where staging has no foreign keys) would count in the totals but in no patient's or
-- branch's row. Sums over the small views cost far less than an anti-join of every visit.
WITH visits AS (
    SELECT count(*) AS visit_count FROM analytics.mv_visit_summary
)
SELECT 'visits counted per patient' AS measure
FROM visits
WHERE visits.visit_count <> (SELECT coalesce(sum(visit_count), 0) FROM analytics.mv_patient_summary)
UNION ALL
SELECT 'visits counted per branch'
FROM visits
WHERE visits.visit_count <> (SELECT coalesce(sum(visit_count), 0) FROM analytics.mv_branch_billing_summary);
