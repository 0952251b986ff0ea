-- analytics.mv_visit_summary as a dbt user makes it incremental: the visits of the last
-- `lookback_days` days before the newest this model holds, merged by visit_id. A visit changed
-- on an older day, or moved out of a day, is not seen.
{{ config(
    materialized='incremental',
    incremental_strategy='merge',
    unique_key='visit_id',
    indexes=[{'columns': ['visit_id'], 'unique': True}]
) }}
SELECT v.visit_id,
       v.patient_id,
       v.doctor_id,
       v.branch_id,
       v.visit_date,
       v.visit_type,
       count(b.billing_id)                      AS billing_lines,
       coalesce(sum(b.billed_amount), 0)        AS billed_amount,
       coalesce(sum(b.paid_amount), 0)          AS paid_amount,
       coalesce(sum(b.outstanding_amount), 0)   AS outstanding_amount
FROM {{ source('staging', 'visits') }} AS v
LEFT JOIN {{ ref('mv_billing_summary') }} AS b USING (visit_id)
{% if is_incremental() %}
WHERE v.visit_date >= (SELECT max(visit_date) FROM {{ this }}) - {{ var('lookback_days') }}
{% endif %}
GROUP BY v.visit_id
