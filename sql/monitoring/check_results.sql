-- check_results: every data check's latest outcome (sql/checks/; source checks under
-- step check_sources), how often it failed or warned in the last 30 days, and what it
-- costs. Failed and warned checks first: the place to look after a "check ... failed"
-- alert. Counts only, never row values: run the check's file yourself to see the rows.
WITH latest AS (
    SELECT DISTINCT ON (step, check_name)
           step, check_name, source_file, severity, outcome, violating_rows, detail, checked_at
    FROM etl_audit.check_results
    ORDER BY step, check_name, checked_at DESC
), recent AS (
    SELECT step,
           check_name,
           count(*) FILTER (WHERE outcome = 'failed') AS failed_30d,
           count(*) FILTER (WHERE outcome = 'warned') AS warned_30d,
           round(avg(duration_seconds), 3)            AS avg_seconds
    FROM etl_audit.check_results
    WHERE checked_at > now() - interval '30 days'
    GROUP BY step, check_name
)
SELECT l.step,
       l.check_name,
       l.severity,
       l.outcome        AS last_outcome,
       l.violating_rows AS last_violating_rows,
       l.checked_at     AS last_checked_at,
       r.failed_30d,
       r.warned_30d,
       r.avg_seconds,
       l.source_file,
       l.detail
FROM latest AS l
LEFT JOIN recent AS r USING (step, check_name)
ORDER BY l.outcome = 'passed', l.step, l.check_name;
