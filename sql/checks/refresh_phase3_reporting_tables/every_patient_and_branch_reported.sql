-- Every patient and every branch of the source has its reporting row, and no row
-- stands for one that is gone: a dashboard with missing patients is worse than
-- yesterday's.
SELECT 'patient' AS kind, coalesce(p.patient_id, s.patient_id) AS id
FROM staging.patients AS p
FULL JOIN reporting.patient_summary AS s USING (patient_id)
WHERE p.patient_id IS NULL OR s.patient_id IS NULL
UNION ALL
SELECT 'branch', coalesce(b.branch_id, s.branch_id)
FROM staging.branches AS b
FULL JOIN reporting.branch_summary AS s USING (branch_id)
WHERE b.branch_id IS NULL OR s.branch_id IS NULL;
