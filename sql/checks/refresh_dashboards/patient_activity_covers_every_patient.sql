-- Every reported patient has exactly one activity row with the same visits, billed
-- and unpaid amounts, and no activity row stands for a patient who is gone.
SELECT patient_id
FROM reporting.patient_summary AS s
FULL JOIN dashboards.patient_activity AS a USING (patient_id)
WHERE (s.visit_count, s.total_billed, s.total_unpaid)
      IS DISTINCT FROM (a.visit_count, a.total_billed, a.total_unpaid);
