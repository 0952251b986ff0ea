-- Volume checks: tonight's volumes against each object's own history
-- (hospitaldb.engine.checks.volume; docs/data-checks.md). One row per judged object:
-- a source table is judged before the first write, with the source checks; a refreshed
-- object inside its step's transaction, before COMMIT. The usual range is the same weekday's
-- lowest to highest over eight weeks once four are on record (a quiet Sunday is judged
-- against Sundays), else the last history_runs runs'. Tonight is unusual beyond tolerance
-- times that range's ends. severity warn: on record and in the run's log; error: refused.
SELECT object_name, measure, severity, history_runs, min_history, tolerance
FROM (
    VALUES ('staging.visits', 'new_rows', 'warn', 30, 10, 0.5),
           ('staging.billing', 'new_rows', 'warn', 30, 10, 0.5),
           ('staging.payments', 'new_rows', 'warn', 30, 10, 0.5),
           ('reporting.revenue_summary', 'changed_rows', 'warn', 30, 10, 0.5)
) AS volume (object_name, measure, severity, history_runs, min_history, tolerance);
