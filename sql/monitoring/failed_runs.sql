-- failed_runs: what failed this week. Every ending of the last 7 days that was not a completion,
-- newest first, wherever it ended: refused before the first step (SQL that does not parse
-- or would block readers, a broken check file, bad settings), refused by the source checks,
-- a check that refused a step's data, a step's error, a crash, a cancel, a run abandoned by
-- its dead process. Read from run_endings, where each execution's ending is appended and never
-- changed: a flow run executed again (execution 2, ...) that completes keeps its failure listed.
-- With where (failed_at), after how many attempts, the SQLSTATE, the failed checks and the error
-- as the run recorded it: names, counts, SQLSTATEs and file:line, never a value from a row (the
-- database's own log has PostgreSQL's full message).
SELECT e.flow_run_id::text                              AS flow_run_id,
       r.flow_run_name,
       r.deployment,
       CASE WHEN e.execution IS NULL OR e.execution = r.executions THEN r.started_at END AS started_at,
       e.finished_at,
       e.outcome,
       coalesce(e.failed_step, 'before the first step') AS failed_at,
       e.attempts,
       e.sqlstate,
       (SELECT string_agg(DISTINCT c.check_name, ', ')
        FROM etl_audit.check_results AS c
        WHERE c.flow_run_id = e.flow_run_id AND c.outcome = 'failed') AS failed_checks,
       e.error,
       coalesce(e.execution, 1)                         AS execution
FROM etl_audit.run_endings AS e
JOIN etl_audit.refresh_runs AS r USING (flow_run_id)
WHERE coalesce(e.finished_at, e.recorded_at) >= now() - interval '7 days'
  AND e.outcome NOT IN ('completed', 'running')
ORDER BY coalesce(e.finished_at, e.recorded_at) DESC;
