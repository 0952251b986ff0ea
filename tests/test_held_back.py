"""What a failure holds back: every object that keeps its previous data, and why, in the alert, the
artifact and data_status (read with the read-only role); the lineage behind it, checked against the
database's own record of what each view reads."""

from __future__ import annotations

import pytest
from test_run_reports import latest_artifact
from test_your_warehouse import CLINIC_SCHEMA, CLINIC_STEPS, write_steps

from hospitaldb.engine.sql.analysis import analyse_steps
from hospitaldb.engine.sql.lineage import lineage_of
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import checksums, execute, query
from hospitaldb_testing.runs import run_flow

OVERPAYMENT = (
    "UPDATE staging.payments SET amount = amount + 100000 "
    "WHERE payment_id = (SELECT min(payment_id) FROM staging.payments)"
)
CHECK_FAILED = "the run failed at refresh_phase3_reporting_tables: check no_negative_outstanding failed"
HELD_BACK = {
    "reporting.patient_summary": CHECK_FAILED,
    "reporting.branch_summary": CHECK_FAILED,
    "reporting.revenue_summary": CHECK_FAILED,
    "dashboards.daily_revenue": "reads reporting.revenue_summary, held back",
    "dashboards.branch_performance": "reads reporting.branch_summary, held back",
    "dashboards.patient_activity": "reads reporting.patient_summary, held back",
}
# What PostgreSQL records a view reads: the relations its rewrite rule depends on.
VIEW_DEPENDENCIES = """
SELECT DISTINCT n.nspname || '.' || c.relname
FROM pg_rewrite AS r
JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
JOIN pg_class AS c ON c.oid = d.refobjid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE r.ev_class = %s::regclass AND d.refobjid <> r.ev_class
"""


def data_status(url: str) -> dict[str, tuple]:
    rows = query(
        url, "SELECT object_name, held_back_since IS NOT NULL, held_back_because FROM etl_audit.data_status"
    )
    return {row[0]: row[1:] for row in rows}


def test_a_failing_check_in_step_2_names_everything_it_holds_back_until_the_next_good_run(
    demo_database, least_privilege, alert_blocks, smtp_server
):
    assert run_flow(**alert_blocks).is_completed()
    execute(demo_database, OVERPAYMENT)
    before = checksums(demo_database, tuple(HELD_BACK))

    state = run_flow(retries=0, **alert_blocks)

    assert state.is_failed()
    assert checksums(demo_database, tuple(HELD_BACK)) == before, "what is held back keeps its data"
    (mail,) = smtp_server.received
    assert "Held back (6, keep their previous data):" in mail.text
    lines = mail.text.splitlines()
    held_lines = lines[lines.index("Held back (6, keep their previous data):") + 1 :]
    assert {line.split()[0]: line.split(maxsplit=1)[1] for line in held_lines if line.strip()} == HELD_BACK
    summary = latest_artifact("hospitaldb-refresh-summary", str(state.state_details.flow_run_id))
    assert "**Held back:** 6 object(s) keep their previous data." in summary
    for name, reason in HELD_BACK.items():
        step = "refresh_dashboards" if name.startswith("dashboards.") else "refresh_phase3_reporting_tables"
        assert f"| {name} | {step} | {reason} |" in summary
    assert "  dashboards.daily_revenue <- reporting.revenue_summary\n" in summary

    status = data_status(least_privilege.reader_url)
    assert {name: because for name, (held, because) in status.items() if held} == HELD_BACK
    assert all(because is None for name, (_, because) in status.items() if name.startswith("analytics."))

    # A second failed night: still held back since the first one.
    first_since = query(
        demo_database,
        "SELECT DISTINCT held_back_since FROM etl_audit.data_status WHERE held_back_since IS NOT NULL",
    )
    assert run_flow(retries=0, **alert_blocks).is_failed()
    assert (
        query(
            least_privilege.reader_url,
            "SELECT DISTINCT held_back_since FROM etl_audit.data_status WHERE held_back_since IS NOT NULL",
        )
        == first_since
    )

    execute(demo_database, OVERPAYMENT.replace("+ 100000", "- 100000"))
    assert run_flow(**alert_blocks).is_completed()
    assert set(data_status(least_privilege.reader_url).values()) == {(False, None)}, "clear after a good run"


def test_refused_sources_hold_back_every_object_with_the_source_named(demo_database, prefect):
    assert run_flow().is_completed()
    execute(demo_database, "DELETE FROM staging.payments")

    assert run_flow(retries=0).is_failed()

    status = data_status(demo_database)
    assert {because for _, because in status.values()} == {
        "the run failed at check_sources: source incomplete: staging.payments"
    }
    assert len(status) == 10


def test_the_lineage_of_each_view_is_what_postgresql_records_it_reads(views_warehouse, prefect):
    demo_database = views_warehouse  # step 1 of materialized views, as before 1.9.0
    files = SqlFiles()
    lineage = lineage_of(analyse_steps(files), files)
    views = [name for name, step in lineage.steps.items() if step == "refresh_phase2_materialized_views"]
    assert len(views) == 4
    for view in views:
        recorded = {row[0] for row in query(demo_database, VIEW_DEPENDENCIES, (view,))}
        assert set(lineage.reads[view]) == recorded, view


@pytest.mark.usefixtures("prefect")
def test_a_second_warehouse_gets_its_lineage_from_its_sql_and_its_database(
    new_database, tmp_path, monkeypatch
):
    execute(new_database, CLINIC_SCHEMA)
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", new_database)
    monkeypatch.setenv(SQL_DIR.name, str(write_steps(tmp_path / "clinic_sql", CLINIC_STEPS)))

    assert run_flow().is_completed()

    recorded = dict(query(new_database, "SELECT object_name, reads FROM etl_audit.run_objects"))
    assert recorded == {
        # The view is defined in no file of the clinic's folder: its reads come from the database.
        "clinic_mart.admissions_by_ward": ["clinic_raw.admissions"],
        "clinic_mart.ward_totals": ["clinic_mart.admissions_by_ward"],
        "clinic_board.daily_admissions": ["clinic_mart.admissions_by_ward"],
    }
    assert recorded["clinic_mart.admissions_by_ward"] == [
        row[0] for row in query(new_database, VIEW_DEPENDENCIES, ("clinic_mart.admissions_by_ward",))
    ]
