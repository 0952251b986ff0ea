"""Independent answers: what each refreshed object must hold, computed straight from staging.

These queries do not read the materialized views or reporting tables, so a bug
in the refresh SQL cannot hide in both places at once.
"""

from __future__ import annotations

from hospitaldb_testing.db import scalar

SOURCE = """
WITH line AS (
    SELECT b.billing_id, b.visit_id, b.amount, b.status,
           coalesce((SELECT sum(p.amount) FROM staging.payments AS p WHERE p.billing_id = b.billing_id), 0) AS paid
    FROM staging.billing AS b
), visit AS (
    SELECT v.visit_id, v.patient_id, v.branch_id, v.visit_date,
           count(l.billing_id) AS lines,
           coalesce(sum(l.amount), 0) AS billed,
           coalesce(sum(l.paid), 0) AS paid,
           coalesce(sum(CASE WHEN l.status = 'denied' THEN 0 ELSE l.amount - l.paid END), 0) AS outstanding
    FROM staging.visits AS v LEFT JOIN line AS l USING (visit_id)
    GROUP BY v.visit_id
), patient AS (
    SELECT p.patient_id, p.full_name, br.branch_name AS home_branch_name,
           count(vi.visit_id) AS visits, min(vi.visit_date) AS first_visit, max(vi.visit_date) AS last_visit,
           coalesce(sum(vi.billed), 0) AS billed, coalesce(sum(vi.paid), 0) AS paid,
           coalesce(sum(vi.outstanding), 0) AS unpaid
    FROM staging.patients AS p
    JOIN staging.branches AS br ON br.branch_id = p.home_branch_id
    LEFT JOIN visit AS vi USING (patient_id)
    GROUP BY p.patient_id, br.branch_name
), branch AS (
    SELECT br.branch_id, br.branch_name, br.city,
           (SELECT count(*) FROM staging.doctors AS d WHERE d.branch_id = br.branch_id) AS doctors,
           count(DISTINCT vi.patient_id) AS patients, count(vi.visit_id) AS visits,
           coalesce(sum(vi.billed), 0) AS billed, coalesce(sum(vi.paid), 0) AS paid,
           coalesce(sum(vi.outstanding), 0) AS outstanding,
           min(vi.visit_date) AS first_visit, max(vi.visit_date) AS last_visit
    FROM staging.branches AS br LEFT JOIN visit AS vi USING (branch_id)
    GROUP BY br.branch_id
)
"""

# object -> (what it holds, what it must hold)
EXPECTATIONS: dict[str, tuple[str, str]] = {
    "analytics.mv_billing_summary": (
        "SELECT billing_id, visit_id, billed_amount, paid_amount, outstanding_amount, is_paid "
        "FROM analytics.mv_billing_summary",
        "SELECT billing_id, visit_id, amount, paid, CASE WHEN status = 'denied' THEN 0 ELSE amount - paid END, "
        "status = 'paid' FROM line",
    ),
    "analytics.mv_visit_summary": (
        "SELECT visit_id, patient_id, branch_id, visit_date, billing_lines, billed_amount, paid_amount, "
        "outstanding_amount FROM analytics.mv_visit_summary",
        "SELECT visit_id, patient_id, branch_id, visit_date, lines, billed, paid, outstanding FROM visit",
    ),
    "analytics.mv_patient_summary": (
        "SELECT patient_id, visit_count, first_visit_date, last_visit_date, billed_amount, paid_amount, "
        "unpaid_amount FROM analytics.mv_patient_summary",
        "SELECT patient_id, visits, first_visit, last_visit, billed, paid, unpaid FROM patient",
    ),
    "analytics.mv_branch_billing_summary": (
        "SELECT branch_id, visit_count, billed_amount, first_visit_date, last_visit_date "
        "FROM analytics.mv_branch_billing_summary",
        "SELECT branch_id, visits, billed, first_visit, last_visit FROM branch",
    ),
    "reporting.patient_summary": (
        "SELECT patient_id, full_name, home_branch_name, visit_count, first_visit_date, last_visit_date, "
        "total_billed, total_paid, total_unpaid FROM reporting.patient_summary",
        "SELECT patient_id, full_name, home_branch_name, visits, first_visit, last_visit, billed, paid, unpaid "
        "FROM patient",
    ),
    "reporting.branch_summary": (
        "SELECT branch_id, branch_name, city, doctor_count, patient_count, visit_count, total_billed, "
        "total_paid, total_outstanding, first_visit_date, last_visit_date FROM reporting.branch_summary",
        "SELECT branch_id, branch_name, city, doctors, patients, visits, billed, paid, outstanding, "
        "first_visit, last_visit FROM branch",
    ),
    "reporting.revenue_summary": (
        "SELECT visit_date, branch_id, visit_count, billed_amount, paid_amount, outstanding_amount "
        "FROM reporting.revenue_summary",
        "SELECT visit_date, branch_id, count(*), sum(billed), sum(paid), sum(outstanding) FROM visit "
        "GROUP BY visit_date, branch_id",
    ),
    "dashboards.daily_revenue": (
        "SELECT revenue_date, visit_count, billed_amount, paid_amount, outstanding_amount, collection_rate "
        "FROM dashboards.daily_revenue",
        "SELECT visit_date, count(*), sum(billed), sum(paid), sum(outstanding), "
        "round(sum(paid) / nullif(sum(billed), 0), 4) FROM visit GROUP BY visit_date",
    ),
    "dashboards.branch_performance": (
        "SELECT branch_id, branch_name, visit_count, patient_count, billed_amount, paid_amount, "
        "collection_rate, avg_billed_per_visit, revenue_rank FROM dashboards.branch_performance",
        "SELECT branch_id, branch_name, visits, patients, billed, paid, round(paid / nullif(billed, 0), 4), "
        "round(billed / nullif(visits, 0), 2), rank() OVER (ORDER BY billed DESC) FROM branch",
    ),
    "dashboards.patient_activity": (
        "SELECT patient_id, visit_count, last_visit_date, days_since_last_visit, activity_segment, "
        "total_billed, total_unpaid FROM dashboards.patient_activity",
        "SELECT patient_id, visits, last_visit, (SELECT max(visit_date) FROM staging.visits) - last_visit, "
        "CASE WHEN visits = 0 THEN 'never_visited' "
        "     WHEN (SELECT max(visit_date) FROM staging.visits) - last_visit > 365 THEN 'lapsed' "
        "     WHEN visits >= 20 THEN 'frequent' WHEN visits >= 5 THEN 'regular' ELSE 'occasional' END, "
        "billed, unpaid FROM patient",
    ),
}


def differences(url: str, refreshed_object: str) -> int:
    """Rows in the object but not expected, plus rows expected but missing."""
    actual, expected = EXPECTATIONS[refreshed_object]
    return scalar(
        url,
        f"{SOURCE} SELECT (SELECT count(*) FROM (({actual}) EXCEPT ALL ({expected})) AS extra)"
        f"     + (SELECT count(*) FROM (({expected}) EXCEPT ALL ({actual})) AS missing)",
    )


def assert_matches_source(url: str, objects: tuple[str, ...] = tuple(EXPECTATIONS)) -> None:
    wrong = {name: count for name in objects if (count := differences(url, name))}
    assert not wrong, f"rows that differ from the independent calculation: {wrong}"
