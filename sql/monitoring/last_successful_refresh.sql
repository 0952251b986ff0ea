-- last_successful_refresh: when each step last completed, and how long ago.
-- The first thing to look at in the morning: every step should show < 24 h.
SELECT s.step,
       max(a.finished_at)                                          AS last_success,
       round(extract(epoch FROM now() - max(a.finished_at)) / 3600, 2) AS hours_ago
FROM (VALUES ('refresh_phase2_materialized_views', 1),
             ('refresh_phase3_reporting_tables', 2),
             ('refresh_dashboards', 3)) AS s (step, position)
LEFT JOIN etl_audit.step_attempts AS a ON a.step = s.step AND a.status = 'completed'
GROUP BY s.step, s.position
ORDER BY s.position;
