-- Shrink guard, for every step: a refreshed object may not lose more than the run's
-- max_shrink_share of its rows (default 0.5) in one refresh, nor go from rows to
-- none. That is what an upstream load that failed half-way looks like, and
-- yesterday's numbers are better than a dashboard of zeros. A deliberate reload
-- passes the flow parameter allow_shrink.
-- The flow fills pg_temp.refresh_row_counts: each object's rows at the start of the
-- step and now, in the step's own transaction.
SELECT object_name, rows_before, rows_after
FROM pg_temp.refresh_row_counts
WHERE NOT current_setting('hospitaldb.allow_shrink')::boolean
  AND rows_before > 0
  AND (rows_after = 0
       OR rows_after < rows_before * (1 - current_setting('hospitaldb.max_shrink_share')::numeric));
