-- Change capture: for each table a step reads, the key columns whose values a change can move.
--
-- `hospitaldb changes install` (an administrator, once) puts statement-level triggers on each
-- source: every INSERT, UPDATE and DELETE logs the old and new values of these columns (a payment
-- moved to another bill logs both bills), a TRUNCATE records that the next run must be full. An
-- incremental step recomputes what those keys touch, so list every column a refreshed object is
-- keyed, joined or grouped by. A step runs incrementally only when every table it reads is listed
-- here, the refresh's own tables included: the reporting step reads the analytics tables and the
-- dashboards step the reporting tables, and each takes what the step before changed in them.
--
-- sums (optional) lists number columns a step adds up by delta over a large group: each change
-- also logs those columns with the row's side, and the step reads, per key, row_change (rows
-- gained, below zero when lost) and <column>_change (what the column gained). The reporting step
-- moves each day's revenue at a branch that way instead of reading all its visits again, and its
-- check of what changed holds what it wrote to revenue_summary (summed too) against what it took.
-- After changing this file, run `hospitaldb changes install` again: until then the steps that
-- read a source whose keys or sums changed run full, and say why.
-- One SELECT: source (schema.table), keys (text[]) and sums (text[], or none).
SELECT 'staging.branches' AS source, ARRAY['branch_id'] AS keys, ARRAY[]::text[] AS sums
UNION ALL SELECT 'staging.doctors', ARRAY['doctor_id', 'branch_id'], '{}'
UNION ALL SELECT 'staging.patients', ARRAY['patient_id', 'home_branch_id'], '{}'
UNION ALL SELECT 'staging.visits', ARRAY['visit_id', 'patient_id', 'doctor_id', 'branch_id', 'visit_date'], '{}'
UNION ALL SELECT 'staging.billing', ARRAY['billing_id', 'visit_id'], '{}'
UNION ALL SELECT 'staging.payments', ARRAY['payment_id', 'billing_id'], '{}'
UNION ALL SELECT 'analytics.mv_patient_summary', ARRAY['patient_id'], '{}'
UNION ALL SELECT 'analytics.mv_branch_billing_summary', ARRAY['branch_id'], '{}'
UNION ALL SELECT 'analytics.mv_visit_summary', ARRAY['visit_date', 'branch_id'],
                 ARRAY['billed_amount', 'paid_amount', 'outstanding_amount']
UNION ALL SELECT 'reporting.patient_summary', ARRAY['patient_id'], '{}'
UNION ALL SELECT 'reporting.branch_summary', ARRAY['branch_id'], '{}'
UNION ALL SELECT 'reporting.revenue_summary', ARRAY['visit_date', 'branch_id'],
                 ARRAY['visit_count', 'billed_amount', 'paid_amount', 'outstanding_amount']
