-- freshness: every refreshed object, the step that refreshes it, when that step
-- last succeeded, and for tables the newest row change (updated_at). An object
-- whose step succeeded but whose last change is old simply had no new data.
WITH object (object_name, step) AS (
    VALUES ('analytics.mv_billing_summary',        'refresh_phase2_materialized_views'),
           ('analytics.mv_visit_summary',          'refresh_phase2_materialized_views'),
           ('analytics.mv_patient_summary',        'refresh_phase2_materialized_views'),
           ('analytics.mv_branch_billing_summary', 'refresh_phase2_materialized_views'),
           ('reporting.patient_summary',           'refresh_phase3_reporting_tables'),
           ('reporting.branch_summary',            'refresh_phase3_reporting_tables'),
           ('reporting.revenue_summary',           'refresh_phase3_reporting_tables'),
           ('dashboards.daily_revenue',            'refresh_dashboards'),
           ('dashboards.branch_performance',       'refresh_dashboards'),
           ('dashboards.patient_activity',         'refresh_dashboards')
), last_success AS (
    SELECT step, max(finished_at) AS refreshed_at
    FROM etl_audit.step_attempts
    WHERE status = 'completed'
    GROUP BY step
)
SELECT o.object_name,
       o.step,
       l.refreshed_at,
       round(extract(epoch FROM now() - l.refreshed_at) / 3600, 2) AS hours_since_refresh,
       CASE o.object_name
           WHEN 'reporting.patient_summary'     THEN (SELECT max(updated_at) FROM reporting.patient_summary)
           WHEN 'reporting.branch_summary'      THEN (SELECT max(updated_at) FROM reporting.branch_summary)
           WHEN 'reporting.revenue_summary'     THEN (SELECT max(updated_at) FROM reporting.revenue_summary)
           WHEN 'dashboards.daily_revenue'      THEN (SELECT max(updated_at) FROM dashboards.daily_revenue)
           WHEN 'dashboards.branch_performance' THEN (SELECT max(updated_at) FROM dashboards.branch_performance)
           WHEN 'dashboards.patient_activity'   THEN (SELECT max(updated_at) FROM dashboards.patient_activity)
       END AS last_row_change
FROM object AS o
LEFT JOIN last_success AS l USING (step)
ORDER BY o.object_name;
