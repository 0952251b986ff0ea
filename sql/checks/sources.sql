-- Source checks, run before the refresh writes anything: one row per staging table
-- the refresh reads, with the thresholds it must meet. The flow fails the run,
-- changing nothing, when a table
--   - has no rows ("source incomplete"),
--   - has fewer rows than (1 - max_drop) times its count at the last successful run
--     ("source incomplete"; the counts are kept in etl_audit.source_counts), or
--   - has its newest row older than max_age ("source stale"; NULL: not checked).
-- Freshness is read from business dates: the reference staging has no load timestamp.
-- A deliberate reload that shrinks a source passes the flow parameter skip_source_checks.
SELECT source, row_count, newest, max_age, max_drop
FROM (
    VALUES ('staging.branches', (SELECT count(*) FROM staging.branches), NULL::timestamptz,
            NULL::interval, 0.1),
           ('staging.doctors', (SELECT count(*) FROM staging.doctors), NULL, NULL, 0.1),
           ('staging.patients', (SELECT count(*) FROM staging.patients), NULL, NULL, 0.1),
           ('staging.visits', (SELECT count(*) FROM staging.visits),
            (SELECT max(visit_date) FROM staging.visits)::timestamptz, interval '3 days', 0.1),
           ('staging.billing', (SELECT count(*) FROM staging.billing),
            (SELECT max(billed_on) FROM staging.billing)::timestamptz, interval '7 days', 0.1),
           ('staging.payments', (SELECT count(*) FROM staging.payments), NULL, NULL, 0.1)
) AS source (source, row_count, newest, max_age, max_drop);
