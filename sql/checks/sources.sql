-- Source checks, run before the refresh writes anything: one row per staging table
-- the refresh reads, with the thresholds it must meet. The flow fails the run,
-- changing nothing, when a table
--   - has no rows ("source incomplete"),
--   - has fewer rows than (1 - max_drop) times its count at the last successful run
--     ("source incomplete"; the counts are kept in etl_audit.source_counts), or
--   - has its newest row older than max_age ("source stale"; NULL: not checked).
-- Freshness is read from business dates: the reference staging has no load timestamp.
-- A deliberate reload that shrinks a source passes the flow parameter skip_source_checks.
-- Rows listed upstream first: the first problem found names the alert. One scan per large
-- table: its count and newest row together (a subquery each would read it twice).
WITH visits AS (
    SELECT count(*) AS row_count, max(visit_date)::timestamptz AS newest FROM staging.visits
), billing AS (
    SELECT count(*) AS row_count, max(billed_on)::timestamptz AS newest FROM staging.billing
)
SELECT source, row_count, newest, max_age, max_drop
FROM (
    VALUES ('staging.branches', (SELECT count(*) FROM staging.branches), NULL::timestamptz,
            NULL::interval, 0.1),
           ('staging.doctors', (SELECT count(*) FROM staging.doctors), NULL, NULL, 0.1),
           ('staging.patients', (SELECT count(*) FROM staging.patients), NULL, NULL, 0.1),
           ('staging.visits', (SELECT row_count FROM visits), (SELECT newest FROM visits),
            interval '3 days', 0.1),
           ('staging.billing', (SELECT row_count FROM billing), (SELECT newest FROM billing),
            interval '7 days', 0.1),
           ('staging.payments', (SELECT count(*) FROM staging.payments), NULL, NULL, 0.1)
) AS source (source, row_count, newest, max_age, max_drop);
