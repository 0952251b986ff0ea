-- every_patient_and_branch_reported on an incremental night: each patient tonight's changes touch
-- (their staging row or their analytics row, as change capture logged them) has a reporting row
-- exactly when they are in staging; every branch is checked whole (a row per branch). Every other
-- patient was reported right on an earlier night and nothing of theirs changed since. The whole
-- check joins every patient of staging with every reporting row.
WITH patients AS MATERIALIZED (
    SELECT patient_id FROM pg_temp.changed_patients
    UNION SELECT patient_id FROM pg_temp.changed_mv_patient_summary
)
SELECT 'patient' AS kind, k.patient_id AS id
FROM patients AS k
WHERE EXISTS (SELECT FROM staging.patients AS p WHERE p.patient_id = k.patient_id)
      <> EXISTS (SELECT FROM reporting.patient_summary AS s WHERE s.patient_id = k.patient_id)
UNION ALL
SELECT 'branch', coalesce(b.branch_id, s.branch_id)
FROM staging.branches AS b
FULL JOIN reporting.branch_summary AS s USING (branch_id)
WHERE b.branch_id IS NULL OR s.branch_id IS NULL;
