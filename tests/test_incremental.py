"""Incremental refresh through the flow, on real PostgreSQL: `mode`, what a run says it did, drift.

The reference HospitalDB's dashboards step has an incremental form (sql/incremental/
refresh_dashboards.sql) that reads what the reporting step changed, as change capture logged it;
the two steps before it refresh full. That incremental equals full over random nights is
tests/test_incremental_property.py's; here, the flow's own path: auto choosing and saying why,
a dry run taking nothing, a TRUNCATE forcing full, the least-privilege refresher, and a periodic
full run that finds drift, repairs it and alerts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from unittest import mock

import psycopg2
import pytest
from psycopg2 import sql

from hospitaldb.engine.changes.capture import install
from hospitaldb.engine.db.database import DATABASE_URL_ENV, target_from_url
from hospitaldb.engine.steps import STEPS
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb.settings import ADMIN_DATABASE_URL, SQL_DIR
from hospitaldb_testing.db import (
    add_source_rows,
    checksums,
    create_roles,
    execute,
    query,
    remove_four_visits_in_five,
    scalar,
    url_of_database,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.nights import without_recency_rule
from hospitaldb_testing.runs import error_text, run_flow, run_logs

DASHBOARDS = "refresh_dashboards"


def installed(url: str, owner: str | None = None) -> None:
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        install(connection, owner)
    finally:
        connection.close()


def modes(state) -> dict[str, tuple[str, int | None]]:
    return {step["step"]: (step["mode"], step["changed_keys"]) for step in state.result()}


def waiting(url: str, step: str = DASHBOARDS) -> int:
    return scalar(
        url,
        "SELECT sum(changed_keys) FROM etl_changes.pending_changes(%s, "
        "ARRAY['reporting.branch_summary', 'reporting.patient_summary', 'reporting.revenue_summary'])",
        (step,),
    )


def test_auto_refreshes_the_dashboards_incrementally_once_a_full_run_is_on_record(demo_database, prefect):
    installed(demo_database)
    first = run_flow()
    assert first.is_completed(), first.message
    assert modes(first) == {
        "refresh_phase2_materialized_views": ("full", None),
        "refresh_phase3_reporting_tables": ("full", None),
        DASHBOARDS: ("full", None),  # capture is new: what changed before it was not logged
    }
    reason = first.result()[2]["mode_reason"]
    assert "newly captured" in reason, reason
    before = dict(query(demo_database, "SELECT patient_id, updated_at FROM dashboards.patient_activity"))

    add_source_rows(demo_database)
    second = run_flow(max_changed_share=1)
    assert second.is_completed(), second.message
    assert {step: mode for step, (mode, _) in modes(second).items()} == dict.fromkeys(STEPS, "incremental")
    keys = modes(second)[DASHBOARDS][1]
    assert keys > 0
    assert_matches_source(demo_database)
    # Only what changed is rewritten: the two visits' patients (the newest visit did not move).
    after = dict(query(demo_database, "SELECT patient_id, updated_at FROM dashboards.patient_activity"))
    assert {patient for patient, stamp in after.items() if before.get(patient) != stamp} >= {1, 900001}
    assert query(
        demo_database,
        "SELECT mode, mode_reason, changed_keys, drift_rows FROM etl_audit.step_attempts "
        "WHERE step = %s ORDER BY attempt_id",
        (DASHBOARDS,),
    ) == [("full", reason, None, None), ("incremental", "mode auto", keys, None)]
    assert waiting(demo_database) == 0
    assert scalar(demo_database, "SELECT count(*) FROM etl_changes.changes") == 0, (
        "taken by every step: trimmed"
    )
    watched = {
        (row["step"], row["mode"]): row
        for row in run_monitoring_query(target_from_url(demo_database, "test"), "incremental_modes")
    }
    assert watched[(DASHBOARDS, "incremental")]["attempts"] == 1
    assert watched[(DASHBOARDS, "incremental")]["median_changed_keys"] == keys
    assert watched[(DASHBOARDS, "full")]["latest_reason"] == reason
    assert watched[("refresh_phase2_materialized_views", "full")]["attempts"] == 1
    assert watched[("refresh_phase2_materialized_views", "incremental")]["attempts"] == 1
    assert sum(row["drift_rows"] for row in watched.values()) == 0


def test_a_dry_run_reports_the_incremental_night_and_takes_nothing(demo_database, prefect):
    installed(demo_database)
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    assert run_flow(
        steps=["refresh_phase2_materialized_views", "refresh_phase3_reporting_tables"]
    ).is_completed()
    keys = waiting(demo_database)
    assert keys > 0
    shown = subprocess.run(
        [
            str(Path(sys.executable).with_name("hospitaldb")),
            "changes",
            "status",
            "--database-url",
            demo_database,
        ],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert (
        f"refresh_dashboards, next run with mode auto: incremental (mode auto); {keys} changed keys wait"
        in (shown.stdout)
    ), shown.stdout + shown.stderr
    snapshot = query(demo_database, "SELECT * FROM dashboards.daily_revenue ORDER BY 1")

    dry = run_flow(mode="incremental", dry_run=True)
    assert dry.is_completed(), dry.message
    assert modes(dry)[DASHBOARDS] == ("incremental", keys)
    assert waiting(demo_database) == keys, "a dry run takes no key"
    assert query(demo_database, "SELECT * FROM dashboards.daily_revenue ORDER BY 1") == snapshot

    real = run_flow(mode="incremental", steps=[DASHBOARDS])
    assert modes(real)[DASHBOARDS] == ("incremental", keys)
    assert waiting(demo_database) == 0
    assert_matches_source(demo_database)


def test_a_truncate_makes_the_next_run_full_and_mode_incremental_refuses_until_then(demo_database, prefect):
    installed(demo_database)
    assert run_flow().is_completed()
    execute(demo_database, "TRUNCATE reporting.revenue_summary")  # a hand, or a restore
    snapshot = query(demo_database, "SELECT * FROM dashboards.daily_revenue ORDER BY 1")

    refused = run_flow(mode="incremental", steps=[DASHBOARDS])
    assert refused.is_failed()
    assert (
        "refresh_dashboards cannot run incrementally: reporting.revenue_summary truncated or newly captured "
        "since its last full run. Run it with mode full (or auto) first."
    ) in error_text(refused)
    assert query(demo_database, "SELECT * FROM dashboards.daily_revenue ORDER BY 1") == snapshot

    repaired = run_flow()
    assert repaired.is_completed(), repaired.message
    assert modes(repaired)[DASHBOARDS] == ("full", None)
    assert_matches_source(demo_database)
    assert modes(run_flow(mode="incremental"))[DASHBOARDS][0] == "incremental"


def object_rows(url: str, state) -> dict[str, int | None]:
    return dict(
        query(
            url,
            "SELECT object_name, row_count FROM etl_audit.run_objects WHERE flow_run_id = %s",
            (str(state.state_details.flow_run_id),),
        )
    )


def test_an_incremental_night_counts_only_what_it_shrank_and_the_guard_still_refuses_a_loss(
    demo_database, prefect
):
    installed(demo_database)
    full = run_flow()
    assert full.is_completed(), full.message
    assert all(rows is not None for rows in object_rows(demo_database, full).values()), "a full night counts"

    add_source_rows(demo_database)
    grown = run_flow(mode="incremental")
    assert grown.is_completed(), grown.message
    rows = object_rows(demo_database, grown)
    # Counting a grown table would read its whole history; the guard cannot refuse it anyway.
    assert rows["analytics.mv_visit_summary"] is None and rows["analytics.mv_billing_summary"] is None
    assert_matches_source(demo_database)

    before = checksums(demo_database)
    remove_four_visits_in_five(demo_database)
    guarded = run_flow(mode="incremental", skip_source_checks=True)
    assert guarded.is_failed()
    assert "refresh_phase2_materialized_views failed: check shrink_guard (" in error_text(guarded)
    assert checksums(demo_database) == before, "better stale than wrong"

    allowed = run_flow(mode="incremental", skip_source_checks=True, allow_shrink=True)
    assert allowed.is_completed(), allowed.message
    assert modes(allowed)["refresh_phase2_materialized_views"][0] == "incremental", "the keys were kept"
    visits = scalar(demo_database, "SELECT count(*) FROM staging.visits")
    assert object_rows(demo_database, allowed)["analytics.mv_visit_summary"] == visits, (
        "a shrunk table is counted"
    )
    assert_matches_source(demo_database)


def test_the_least_privilege_refresher_takes_keys_and_nothing_else(demo_database, prefect, monkeypatch):
    suffix = uuid.uuid4().hex[:8]
    owner, refresher, reader = (f"hdb_{kind}_{suffix}" for kind in ("owner", "refresher", "reader"))
    create_roles(demo_database, owner, refresher, reader)
    installed(demo_database, owner)
    create_roles(demo_database, owner, refresher, reader)  # after an install: the refresher may take keys
    execute(
        demo_database, sql.SQL("ALTER ROLE {} PASSWORD 'incremental-pw'").format(sql.Identifier(refresher))
    )
    refresher_url = url_of_database(demo_database, None, user=refresher, password="incremental-pw")
    try:
        monkeypatch.setenv(DATABASE_URL_ENV, refresher_url)
        assert run_flow().is_completed()
        add_source_rows(demo_database)
        state = run_flow(max_changed_share=1)
        assert state.is_completed(), state.message
        assert modes(state)[DASHBOARDS][0] == "incremental"
        assert_matches_source(demo_database)
        for forbidden in (
            "SELECT count(*) FROM etl_changes.reporting__patient_summary",
            "DELETE FROM etl_changes.taken",
            "SELECT etl_changes.logged_keys('staging.visits')",
        ):
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                execute(refresher_url, forbidden)
    finally:
        roles = sql.SQL(", ").join(sql.Identifier(role) for role in (owner, refresher, reader))
        execute(demo_database, sql.SQL("DROP OWNED BY {} CASCADE").format(roles))
        execute(demo_database, sql.SQL("DROP ROLE {}").format(roles))


def test_the_periodic_full_run_finds_drift_repairs_it_and_alerts(
    demo_database, prefect, alert_blocks, smtp_server, tmp_path, monkeypatch
):
    # A wrong incremental form: recency is not measured again when the newest visit moves.
    monkeypatch.setenv(SQL_DIR.name, str(without_recency_rule(tmp_path / "sql")))
    installed(demo_database)
    assert run_flow(**alert_blocks).is_completed()
    execute(
        demo_database,
        "INSERT INTO staging.visits SELECT 9000009, patient_id, doctor_id, branch_id, "
        "(SELECT max(visit_date) + 30 FROM staging.visits), 'outpatient' FROM staging.visits WHERE visit_id = 1",
    )
    wrong = run_flow(**alert_blocks, max_changed_share=1)
    assert modes(wrong)[DASHBOARDS][0] == "incremental"
    stale = scalar(
        demo_database,
        "SELECT count(*) FROM dashboards.patient_activity AS a JOIN reporting.patient_summary AS s USING (patient_id) "
        "WHERE a.days_since_last_visit <> (SELECT max(last_visit_date) FROM reporting.patient_summary) "
        "- s.last_visit_date",
    )
    assert stale > 1, "the broken form published stale recency (checks cannot see it)"

    dry = run_flow(**alert_blocks, mode="full", dry_run=True)  # says so, repairs nothing
    assert dry.is_completed(), dry.message
    assert dry.result()[2]["drift"] == {
        "dashboards.patient_activity": {"inserted": 0, "updated": stale, "deleted": 0}
    }
    assert "dry run: Drift: after the incremental form" in run_logs(dry)

    periodic = run_flow(**alert_blocks, full_every_days=0.000001)
    assert periodic.is_failed()
    message = error_text(periodic)
    assert message.startswith("Drift: after the incremental form, the full form still changed rows")
    assert f"dashboards.patient_activity 0 inserted, {stale} updated, 0 deleted" in message
    assert_matches_source(demo_database)  # repaired, committed
    assert query(
        demo_database,
        "SELECT mode, drift_rows FROM etl_audit.step_attempts WHERE step = %s ORDER BY attempt_id DESC LIMIT 1",
        (DASHBOARDS,),
    ) == [("full", stale)]
    assert any("Drift" in mail.text for mail in smtp_server.received)


def test_capture_installed_by_1_7_0_upgrades_in_place_keeping_the_keys_that_wait(demo_database, prefect):
    execute(demo_database, (Path(__file__).parent / "fixtures" / "etl_changes_1_7_0.sql").read_text())
    execute(demo_database, "UPDATE staging.branches SET city = city WHERE branch_id = 3")
    before_upgrade = run_flow()  # 1.7.0's capture has no pending_changes: every step full, said why
    assert before_upgrade.is_completed(), before_upgrade.message
    assert "change capture is not installed" in before_upgrade.result()[2]["mode_reason"]

    command = [str(Path(sys.executable).with_name("hospitaldb")), "changes"]
    env = {**os.environ, ADMIN_DATABASE_URL.name: demo_database}
    done = subprocess.run([*command, "install"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run([*command, "status"], env=env, capture_output=True, text=True, cwd=PROJECT_ROOT)
    assert "staging.branches: keys branch_id; 1 changed keys wait" in shown.stdout, "kept through the upgrade"
    assert "reporting.revenue_summary: keys visit_date, branch_id" in shown.stdout

    first = run_flow()
    assert modes(first)[DASHBOARDS] == ("full", None)
    add_source_rows(demo_database)
    second = run_flow(max_changed_share=1)
    assert modes(second)[DASHBOARDS][0] == "incremental"
    assert_matches_source(demo_database)


def test_an_etl_audit_of_1_7_0_upgrades_in_place_and_keeps_what_it_recorded(demo_database, prefect):
    execute(demo_database, "DROP SCHEMA etl_audit CASCADE")
    execute(demo_database, (Path(__file__).parent / "fixtures" / "etl_audit_1_7_0.sql").read_text())
    earlier = str(uuid.uuid4())
    execute(
        demo_database,
        "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, outcome, finished_at) "
        "VALUES (%s, 'before-1.8', ARRAY['refresh_dashboards'], 'completed', 'completed', now() - interval '1 day');"
        "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, status, finished_at, duration_seconds) "
        "VALUES (%s, 'refresh_dashboards', 1, 'completed', now() - interval '1 day', 1.5)",
        (earlier, earlier),
    )
    installed(demo_database)
    state = run_flow()  # as an administrator: the run upgrades etl_audit in place
    assert state.is_completed(), state.message
    assert query(
        demo_database,
        "SELECT flow_run_id::text, mode, duration_seconds FROM etl_audit.step_attempts "
        "WHERE step = %s ORDER BY attempt_id",
        (DASHBOARDS,),
    ) == [(earlier, None, 1.5), (str(state.state_details.flow_run_id), "full", mock.ANY)]
    assert "before-1.8" in [
        row[0] for row in query(demo_database, "SELECT flow_run_name FROM etl_audit.refresh_runs")
    ]


def test_capture_installed_by_1_9_0_runs_the_reporting_step_full_until_installed_again(
    demo_database, prefect
):
    # 1.9.0's capture logs no sums: the reporting step's revenue delta (and the dashboards step's
    # source, summed for the reporting step's control total) cannot run on it. Until `hospitaldb
    # changes install` runs again, those steps run full and say why; step 1 stays incremental.
    # After it, one full run (their sources' logs are new), then incremental again.
    PHASE2, PHASE3 = "refresh_phase2_materialized_views", "refresh_phase3_reporting_tables"
    execute(demo_database, (Path(__file__).parent / "fixtures" / "etl_changes_1_9_0.sql").read_text())
    assert run_flow().is_completed()  # no full run on record yet: every step full
    add_source_rows(demo_database)
    before_install = run_flow(max_changed_share=1)
    assert before_install.is_completed(), before_install.message
    assert {step: mode for step, (mode, _) in modes(before_install).items()} == {
        PHASE2: "incremental",
        PHASE3: "full",
        DASHBOARDS: "full",
    }
    reason = before_install.result()[1]["mode_reason"]
    assert "analytics.mv_visit_summary" in reason and "hospitaldb changes install" in reason, reason
    assert "reporting.revenue_summary" in before_install.result()[2]["mode_reason"]
    assert_matches_source(demo_database)

    installed(demo_database)
    move_a_visit = "UPDATE staging.visits SET visit_date = visit_date - 1 WHERE visit_id = 9000002"
    execute(demo_database, move_a_visit)
    after_install = run_flow(max_changed_share=1)
    assert modes(after_install)[PHASE3][0] == modes(after_install)[DASHBOARDS][0] == "full"
    assert "newly captured" in after_install.result()[1]["mode_reason"]
    execute(demo_database, move_a_visit)
    next_night = run_flow(max_changed_share=1)
    assert {step: mode for step, (mode, _) in modes(next_night).items()} == dict.fromkeys(
        STEPS, "incremental"
    )
    assert_matches_source(demo_database)
