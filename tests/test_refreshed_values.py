"""The refreshed objects hold the right values, also after new source data arrives."""

from __future__ import annotations

from hospitaldb_testing.db import REFRESHED_OBJECTS, add_source_rows, query, scalar
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.runs import run_flow


def test_refresh_matches_independent_calculation(demo_database, prefect):
    state = run_flow()
    assert state.is_completed(), state.message
    for refreshed_object in REFRESHED_OBJECTS:
        assert scalar(demo_database, f"SELECT count(*) FROM {refreshed_object}") > 0, refreshed_object
    assert_matches_source(demo_database)

    results = state.result()
    assert [result["step"] for result in results] == [
        "refresh_phase2_materialized_views",
        "refresh_phase3_reporting_tables",
        "refresh_dashboards",
    ]
    assert all(result["statements"] for result in results)


def test_second_refresh_picks_up_new_source_rows_and_rewrites_only_changed_rows(demo_database, prefect):
    assert run_flow().is_completed()
    changed_patients = {
        row[0]
        for row in query(
            demo_database,
            """
            SELECT 1 UNION SELECT v.patient_id FROM staging.billing AS b JOIN staging.visits AS v USING (visit_id)
            WHERE b.billing_id = (SELECT min(billing_id) FROM staging.billing WHERE status = 'pending')
            """,
        )
    }
    before = dict(query(demo_database, "SELECT patient_id, updated_at FROM reporting.patient_summary"))

    add_source_rows(demo_database)
    assert run_flow().is_completed()

    assert_matches_source(demo_database)
    assert query(
        demo_database,
        "SELECT visit_count, total_billed, total_paid, total_unpaid FROM reporting.patient_summary "
        "WHERE patient_id = 900001",
    ) == [(1, 1450, 250, 1200)]
    after = dict(query(demo_database, "SELECT patient_id, updated_at FROM reporting.patient_summary"))
    rewritten = {patient for patient, stamp in after.items() if before.get(patient) != stamp}
    assert rewritten == changed_patients | {900001}
