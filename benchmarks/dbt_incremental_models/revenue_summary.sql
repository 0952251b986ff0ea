-- reporting.revenue_summary as a dbt user makes it incremental: the (day, branch) groups of the
-- last `lookback_days` days before the newest this model holds, recomputed and merged by their
-- key. A group on an older day whose visits changed keeps its old sums.
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key=['visit_date', 'branch_id'],
    indexes=[{'columns': ['visit_date', 'branch_id'], 'unique': True}]
) }}
SELECT visit_date,
       branch_id,
       count(*)                AS visit_count,
       sum(billed_amount)      AS billed_amount,
       sum(paid_amount)        AS paid_amount,
       sum(outstanding_amount) AS outstanding_amount
FROM {{ ref('mv_visit_summary') }}
{% if is_incremental() %}
WHERE visit_date >= (SELECT max(visit_date) FROM {{ this }}) - {{ var('lookback_days') }}
{% endif %}
GROUP BY visit_date, branch_id
