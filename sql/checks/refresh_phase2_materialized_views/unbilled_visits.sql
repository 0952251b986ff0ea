-- severity: warn
-- Visits more than three days old with no billing line: usually billing running
-- late upstream, sometimes lost charges. Worth a look; not a reason to keep
-- yesterday's numbers.
SELECT visit_id
FROM analytics.mv_visit_summary
WHERE billing_lines = 0 AND visit_date < current_date - 3;
