-- retries_and_failures: the last 7 days per step: attempts, retries (attempts
-- after the first), failed attempts, and runs that failed at this step in the
-- end (their last attempt failed). Retries without failed runs are the retry
-- policy doing its job; a growing count still deserves a look (lock contention,
-- an unstable network).
WITH week AS (
    SELECT *,
           attempt = max(attempt) OVER (PARTITION BY flow_run_id, step) AS is_last_attempt
    FROM etl_audit.step_attempts
    WHERE started_at >= now() - interval '7 days'
)
SELECT step,
       count(*)                                                AS attempts,
       count(*) FILTER (WHERE attempt > 1)                     AS retries,
       count(*) FILTER (WHERE status IN ('failed', 'crashed')) AS failed_attempts,
       count(*) FILTER (WHERE is_last_attempt AND status IN ('failed', 'crashed')) AS failed_runs
FROM week
GROUP BY step
ORDER BY step;
