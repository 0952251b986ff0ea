-- incremental_modes: per step and form (full or incremental) over 30 days: how many completed
-- attempts ran it, their median seconds and changed keys, when it last ran, and the drift the full
-- runs found (rows a full run still changed after the incremental form: should stay 0). A step
-- that never runs incremental while capture is installed says why in its latest reason.
WITH recent AS (
    SELECT step, mode, mode_reason, changed_keys, drift_rows, duration_seconds, finished_at,
           row_number() OVER (PARTITION BY step, mode ORDER BY finished_at DESC) AS age
    FROM etl_audit.step_attempts
    WHERE status = 'completed' AND mode IS NOT NULL AND finished_at > now() - interval '30 days'
)
SELECT step,
       mode,
       count(*)                                                                          AS attempts,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds)::numeric, 3)  AS median_seconds,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY changed_keys)::numeric)         AS median_changed_keys,
       max(finished_at)                                                                  AS last_finished_at,
       max(mode_reason) FILTER (WHERE age = 1)                                           AS latest_reason,
       count(*) FILTER (WHERE drift_rows IS NOT NULL)                                    AS drift_checks,
       coalesce(sum(drift_rows), 0)                                                      AS drift_rows
FROM recent
GROUP BY step, mode
ORDER BY step, mode;
