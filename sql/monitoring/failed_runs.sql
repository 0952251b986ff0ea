-- failed_runs: what failed this week. Every run of the last 7 days that did not complete,
-- newest first, wherever it ended: refused before the first step (SQL that does not parse
-- or would block readers, a broken check file, bad settings), refused by the source checks,
-- a check that refused a step's data, a step's error, a crash, a cancel, a run abandoned by
-- its dead process. With where (failed_at), after how many attempts, the SQLSTATE, the
-- failed checks and the error as the run recorded it: names, counts, SQLSTATEs and file:line,
-- never a value from a row (the database's own log has PostgreSQL's full message).
SELECT r.flow_run_id::text                              AS flow_run_id,
       r.flow_run_name,
       r.deployment,
       r.started_at,
       r.finished_at,
       r.outcome,
       coalesce(r.failed_step, 'before the first step') AS failed_at,
       r.attempts,
       r.sqlstate,
       (SELECT string_agg(DISTINCT c.check_name, ', ')
        FROM etl_audit.check_results AS c
        WHERE c.flow_run_id = r.flow_run_id AND c.outcome = 'failed') AS failed_checks,
       r.error
FROM etl_audit.refresh_runs AS r
WHERE r.started_at >= now() - interval '7 days'
  AND r.outcome NOT IN ('completed', 'running')
ORDER BY r.started_at DESC;
