-- freshness: every refreshed object, the step that refreshes it, when that step last
-- succeeded, and when the object's rows last changed (the last successful run that
-- inserted, updated or deleted any). An object whose step succeeded but whose last
-- change is old simply had no new data. Objects and last successes come from
-- etl_audit.data_status (itself read from what the step files refresh), never from a
-- list here.
WITH last_change AS (
    SELECT o.object_name, max(a.finished_at) AS last_row_change
    FROM etl_audit.run_objects AS o
    JOIN etl_audit.step_attempts AS a
      ON a.flow_run_id = o.flow_run_id AND a.step = o.step AND a.status = 'completed'
    WHERE o.inserted + o.updated + o.deleted > 0
    GROUP BY o.object_name
)
SELECT s.object_name,
       s.step,
       s.published_at          AS refreshed_at,
       s.hours_since_published AS hours_since_refresh,
       c.last_row_change
FROM etl_audit.data_status AS s
LEFT JOIN last_change AS c USING (object_name)
ORDER BY s.object_name;
