-- patient_summary_counts_every_visit on an incremental night: each patient tonight's changes
-- touch (one of their visits, old or new, or their own row, as change capture logged them) counts
-- in mv_patient_summary exactly their staging visits, and no touched visit lacks a patient. A
-- visit whose patient is missing would count for nobody. Every other patient counted right on an
-- earlier night and nothing of theirs changed since. Through the visits' patient_id index; the
-- whole check counts every visit.
WITH patients AS MATERIALIZED (
    SELECT patient_id FROM pg_temp.changed_visits WHERE patient_id IS NOT NULL
    UNION SELECT patient_id FROM pg_temp.changed_patients
)
SELECT 'visits counted per patient' AS problem
FROM patients AS k
LEFT JOIN analytics.mv_patient_summary AS s USING (patient_id)
WHERE coalesce(s.visit_count, 0)
      <> (SELECT count(*) FROM staging.visits AS v WHERE v.patient_id = k.patient_id)
UNION ALL
SELECT 'NULL patient_id'
FROM (SELECT DISTINCT visit_id FROM pg_temp.changed_visits) AS c
JOIN staging.visits AS v USING (visit_id)
WHERE v.patient_id IS NULL;
