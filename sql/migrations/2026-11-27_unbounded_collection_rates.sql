-- Run once on a HospitalDB created before 2026-11-27: collection rates become unbounded numeric.
-- numeric(6,4) overflowed (SQLSTATE 22003, not retried) whenever a day's or a branch's payments
-- exceeded 100 times its billed amount (a denied line paid anyway, a refund booked as a payment),
-- and step 3 then failed every night until someone edited data. Relaxing a numeric's precision
-- rewrites nothing, so each ALTER holds its ACCESS EXCLUSIVE lock only for a moment: run it
-- outside the refresh window (psql -f), not as part of a step.
ALTER TABLE dashboards.daily_revenue ALTER COLUMN collection_rate TYPE numeric;
ALTER TABLE dashboards.branch_performance ALTER COLUMN collection_rate TYPE numeric;
