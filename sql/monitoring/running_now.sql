-- running_now: refresh sessions right now (application_name hospitaldb-refresh*),
-- what each runs, for how long, what it waits on, and who blocks it. A refresh
-- that waits on a Lock with a blocker listed is stuck behind that session: look
-- at the blocker's query and application before cancelling anything.
SELECT a.pid,
       a.application_name,
       a.state,
       round(extract(epoch FROM now() - a.query_start)::numeric, 1) AS running_seconds,
       a.wait_event_type,
       a.wait_event,
       left(a.query, 200)                                            AS query,
       pg_blocking_pids(a.pid)                                       AS blocked_by,
       (SELECT string_agg(format('%s %s: %s', b.pid, b.application_name, left(b.query, 100)), '; ')
        FROM pg_stat_activity AS b
        WHERE b.pid = ANY (pg_blocking_pids(a.pid)))                 AS blockers
FROM pg_stat_activity AS a
WHERE a.application_name LIKE 'hospitaldb-refresh%'
  AND a.datname = current_database()
  AND a.pid <> pg_backend_pid()
ORDER BY a.query_start;
