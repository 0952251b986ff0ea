-- Every visit in analytics belongs to a known patient and branch; otherwise its
-- revenue would count in the totals but in no patient's or branch's row.
SELECT v.visit_id
FROM analytics.mv_visit_summary AS v
WHERE NOT EXISTS (SELECT FROM staging.patients AS p WHERE p.patient_id = v.patient_id)
   OR NOT EXISTS (SELECT FROM staging.branches AS b WHERE b.branch_id = v.branch_id);
