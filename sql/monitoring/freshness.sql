-- freshness: every refreshed object, the step that refreshes it, when that step last
-- succeeded, and when the object's rows last changed (the last successful run that
-- inserted, updated or deleted any). An object whose step succeeded but whose last
-- change is old simply had no new data. The objects come from the audit trail
-- (etl_audit.refreshed_objects: what the step files refresh), never from a list here.
WITH object AS (
    SELECT object_name, step FROM etl_audit.refreshed_objects
), last_success AS (
    SELECT step, max(finished_at) AS refreshed_at
    FROM etl_audit.step_attempts
    WHERE status = 'completed'
    GROUP BY step
), last_change AS (
    SELECT o.object_name, max(a.finished_at) AS last_row_change
    FROM etl_audit.run_objects AS o
    JOIN etl_audit.step_attempts AS a
      ON a.flow_run_id = o.flow_run_id AND a.step = o.step AND a.status = 'completed'
    WHERE o.inserted + o.updated + o.deleted > 0
    GROUP BY o.object_name
)
SELECT o.object_name,
       o.step,
       l.refreshed_at,
       round(extract(epoch FROM now() - l.refreshed_at) / 3600, 2) AS hours_since_refresh,
       c.last_row_change
FROM object AS o
LEFT JOIN last_success AS l USING (step)
LEFT JOIN last_change AS c USING (object_name)
ORDER BY o.object_name;
