-- Step 1 of the nightly refresh: the phase 2 analytics materialized views.
--
-- Pattern: REFRESH MATERIALIZED VIEW CONCURRENTLY. PostgreSQL computes the new
-- result beside the old one and applies only the differences, holding an
-- EXCLUSIVE lock that still admits readers (ACCESS SHARE): dashboards keep
-- reading the previous rows, never blocked, until the step commits. It needs
-- the unique index that every view has (sql/schema/02_analytics.sql).
--
-- The whole file runs in one transaction, so the four views change together or
-- not at all. Order matters: later views read mv_billing_summary and
-- mv_visit_summary, which must already hold the new rows.
REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.mv_billing_summary;
REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.mv_visit_summary;
REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.mv_patient_summary;
REFRESH MATERIALIZED VIEW CONCURRENTLY analytics.mv_branch_billing_summary;
