-- retries_and_failures: the last 7 days per place a run can fail (each step, check_sources,
-- and 'before the first step'): attempts, retries (attempts after the first), failed
-- attempts, and runs that failed there in the end (failures, refusals, crashes and
-- abandoned runs; not cancels), as each run recorded it. The failed_runs of all places add
-- up to every failed run; failed_runs.sql lists them one by one with why. Retries without
-- failed runs are the retry policy doing its job; a growing count still deserves a look
-- (lock contention, an unstable network).
WITH attempts AS (
    SELECT step,
           count(*)                                                AS attempts,
           count(*) FILTER (WHERE attempt > 1)                     AS retries,
           count(*) FILTER (WHERE status IN ('failed', 'crashed', 'abandoned')) AS failed_attempts
    FROM etl_audit.step_attempts
    WHERE started_at >= now() - interval '7 days'
    GROUP BY step
), failed AS (
    SELECT coalesce(failed_step, 'before the first step') AS step, count(*) AS failed_runs
    FROM etl_audit.refresh_runs
    WHERE started_at >= now() - interval '7 days'
      AND outcome IN ('failed', 'check_failed', 'sources_refused', 'refused', 'crashed', 'abandoned')
    GROUP BY 1
)
SELECT step,
       coalesce(a.attempts, 0)        AS attempts,
       coalesce(a.retries, 0)         AS retries,
       coalesce(a.failed_attempts, 0) AS failed_attempts,
       coalesce(f.failed_runs, 0)     AS failed_runs
FROM attempts AS a
FULL JOIN failed AS f USING (step)
ORDER BY step;
