-- duration_trend: each step's duration over its last 30 successful attempts:
-- median, p95, the latest and the slowest. A latest far above the p95 is the
-- early sign of a query plan gone bad or data growing faster than expected.
WITH recent AS (
    SELECT step, finished_at, duration_seconds,
           row_number() OVER (PARTITION BY step ORDER BY finished_at DESC) AS age
    FROM etl_audit.step_attempts
    WHERE status = 'completed'
)
SELECT step,
       count(*)                                                            AS attempts,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_seconds)::numeric, 3)  AS median_seconds,
       round(percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_seconds)::numeric, 3) AS p95_seconds,
       max(duration_seconds) FILTER (WHERE age = 1)                        AS latest_seconds,
       max(duration_seconds)                                               AS max_seconds
FROM recent
WHERE age <= 30
GROUP BY step
ORDER BY step;
