"""Audit trail, monitoring queries and artifacts after a successful, a retried and a failed run;
the freshness check's alert."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal

import psycopg2
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from sqlalchemy.engine import make_url

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.freshness import hospitaldb_freshness_check
from hospitaldb.record.audit_schema import upgrade_schema
from hospitaldb.record.monitoring import monitoring_queries, run_monitoring_query
from hospitaldb_testing.db import REFRESHED_OBJECTS, add_source_rows, checksums, create_roles, execute, query
from hospitaldb_testing.runs import InBackground, TableLock, error_text, run_flow, wait_for_blocked_refresh

STEP1, STEP2, STEP3 = (
    "refresh_phase2_materialized_views",
    "refresh_phase3_reporting_tables",
    "refresh_dashboards",
)


@pytest.fixture
def three_runs(demo_database, prefect) -> dict[str, str]:
    """A successful run, a run whose step 2 was retried after pg_terminate_backend, a failed run."""
    ok = run_flow()
    assert ok.is_completed()

    add_source_rows(demo_database)
    blocker = TableLock(demo_database, "reporting.patient_summary")
    retried = InBackground(lambda: run_flow(retries=3))
    retried.start()
    try:
        execute(demo_database, "SELECT pg_terminate_backend(%s)", (wait_for_blocked_refresh(demo_database),))
    finally:
        blocker.release()
    retried.join(timeout=120)
    assert retried.result.is_completed()

    execute(
        demo_database,
        "INSERT INTO staging.payments VALUES (999999991, 90000011, -1000000, '2026-07-09', 'cash')",
    )
    failed = run_flow(retries=0)
    assert failed.is_failed()
    return {
        name: str(state.state_details.flow_run_id)
        for name, state in [("ok", ok), ("retried", retried.result), ("failed", failed)]
    }


def monitor(url: str, name: str) -> list[dict]:
    return run_monitoring_query(target_from_url(url, "test"), name)


def by_step(rows: list[dict]) -> dict[str, dict]:
    return {row["step"]: row for row in rows}


def test_audit_trail_records_every_run_attempt_and_statement(demo_database, three_runs):
    runs = dict(query(demo_database, "SELECT flow_run_id::text, status FROM etl_audit.refresh_runs"))
    assert runs == {
        three_runs["ok"]: "completed",
        three_runs["retried"]: "completed",
        three_runs["failed"]: "failed",
    }
    attempts = query(
        demo_database,
        "SELECT flow_run_id::text, step, attempt, status, "
        "coalesce(sqlstate, substring(error FROM 'terminating connection due to administrator command')) "
        "FROM etl_audit.step_attempts "
        "WHERE step = %s ORDER BY attempt_id",
        (STEP2,),
    )
    assert attempts == [
        (three_runs["ok"], STEP2, 1, "completed", None),
        (
            three_runs["retried"],
            STEP2,
            1,
            "failed",
            "terminating connection due to administrator command",
        ),
        (three_runs["retried"], STEP2, 2, "completed", None),
        (three_runs["failed"], STEP2, 1, "failed", "23514"),
    ]
    # The terminated attempt rolled back, yet its finished statements are on record.
    recorded = query(
        demo_database,
        "SELECT s.statement_number FROM etl_audit.statement_runs AS s JOIN etl_audit.step_attempts AS a "
        "USING (attempt_id) WHERE a.flow_run_id = %s AND a.step = %s AND a.attempt = 1 ORDER BY 1",
        (three_runs["retried"], STEP2),
    )
    assert recorded == [(1,), (2,)]


def test_monitoring_queries_answer_right_after_real_runs(demo_database, three_runs):
    assert monitoring_queries() == [
        "check_results",
        "duration_trend",
        "failed_runs",
        "freshness",
        "incremental_modes",
        "last_successful_refresh",
        "object_sizes",
        "retries_and_failures",
        "running_now",
    ]
    last = monitor(demo_database, "last_successful_refresh")
    assert [row["step"] for row in last] == [STEP1, STEP2, STEP3]
    assert all(row["last_success"] and row["hours_ago"] < 1 for row in last)
    (step2_success,) = query(
        demo_database,
        "SELECT finished_at FROM etl_audit.step_attempts WHERE flow_run_id = %s AND step = %s AND attempt = 2",
        (three_runs["retried"], STEP2),
    )[0]
    assert by_step(last)[STEP2]["last_success"] == step2_success

    trend = by_step(monitor(demo_database, "duration_trend"))
    assert {step: row["attempts"] for step, row in trend.items()} == {
        "check_sources": 3,
        STEP1: 3,
        STEP2: 2,
        STEP3: 2,
    }
    assert all(
        0 < row["median_seconds"] <= row["p95_seconds"] <= row["max_seconds"] for row in trend.values()
    )

    failures = by_step(monitor(demo_database, "retries_and_failures"))
    summary = {
        step: (r["attempts"], r["retries"], r["failed_attempts"], r["failed_runs"])
        for step, r in failures.items()
    }
    assert summary == {
        "check_sources": (3, 0, 0, 0),
        STEP1: (3, 0, 0, 0),
        STEP2: (4, 1, 2, 1),
        STEP3: (2, 0, 0, 0),
    }

    freshness = {row["object_name"]: row for row in monitor(demo_database, "freshness")}
    assert set(freshness) == set(REFRESHED_OBJECTS)
    assert freshness["dashboards.daily_revenue"]["refreshed_at"] == by_step(last)[STEP3]["last_success"]
    assert freshness["reporting.patient_summary"]["last_row_change"] is not None
    # The analytics tables too: the run after new source rows changed them.
    view = freshness["analytics.mv_visit_summary"]
    assert view["last_row_change"] is not None and view["last_row_change"] <= view["refreshed_at"]

    checks = {(row["step"], row["check_name"]): row for row in monitor(demo_database, "check_results")}
    assert checks[("check_sources", "source staging.visits")]["last_outcome"] == "passed"
    assert checks[(STEP1, "shrink_guard")]["last_outcome"] == "passed"
    assert all(row["failed_30d"] == 0 and row["avg_seconds"] >= 0 for row in checks.values())
    assert {step for step, _ in checks} == {"check_sources", STEP1, STEP2, STEP3}

    sizes = {row["object_name"]: row for row in monitor(demo_database, "object_sizes")}
    assert set(sizes) == set(REFRESHED_OBJECTS)
    assert all(row["total_bytes"] > 0 for row in sizes.values())
    assert sizes["analytics.mv_visit_summary"]["kind"] == "table"


def test_running_now_shows_a_blocked_refresh_and_its_blocker(demo_database, prefect):
    blocker = TableLock(demo_database, "reporting.patient_summary")
    blocker_pid = blocker.connection.get_backend_pid()
    run = InBackground(lambda: run_flow())
    run.start()
    try:
        refresh_pid = wait_for_blocked_refresh(demo_database)
        rows = {row["pid"]: row for row in monitor(demo_database, "running_now")}
    finally:
        blocker.release()
    run.join(timeout=120)
    assert rows[refresh_pid]["wait_event_type"] == "Lock"
    assert rows[refresh_pid]["blocked_by"] == [blocker_pid]
    assert "INSERT INTO reporting.patient_summary" in rows[refresh_pid]["query"]
    assert "hospitaldb-refresh-lock" in {row["application_name"] for row in rows.values()}
    assert run.result.is_completed()


def latest_artifact(key: str, flow_run_id: str):
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
        )
    return artifact


def test_every_run_publishes_a_step_table_and_a_summary(demo_database, three_runs):
    table = latest_artifact("hospitaldb-refresh-steps", three_runs["retried"])
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert [(row["step"], row["status"], row["attempts"]) for row in rows] == [
        (STEP1, "completed", 1),
        (STEP2, "completed", 2),
        (STEP3, "completed", 1),
    ]
    failed = latest_artifact("hospitaldb-refresh-steps", three_runs["failed"])
    rows = json.loads(failed.data) if isinstance(failed.data, str) else failed.data
    assert [(row["step"], row["status"], row["attempts"]) for row in rows] == [
        (STEP1, "completed", 1),
        (STEP2, "failed", 1),
        (STEP3, "not run", None),
    ]
    summary = latest_artifact("hospitaldb-refresh-summary", three_runs["failed"])
    assert summary.data.startswith("# HospitalDB refresh failed")
    assert "constraint revenue_summary_paid_amount_check" in summary.data


def test_a_run_with_the_api_up_sends_each_log_line_once(demo_database, three_runs):
    # The run keeps its lines to send those an outage lost (report/lost_logs.py): none was, none twice.
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        for flow_run_id in three_runs.values():
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            lines = [(log.timestamp, log.message) for log in logs]
            assert any(message.startswith("Refreshing database") for _, message in lines)
            assert len(lines) == len(set(lines)), "no line twice"


def test_the_refresher_refreshes_and_can_neither_grant_nor_alter_nor_rewrite_its_audit(
    demo_database, least_privilege, prefect, monkeypatch
):
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
    assert run_flow().is_completed() and run_flow().is_completed(), "it refreshes, twice"
    refresher = least_privilege.refresher_url
    rewrites = [
        "UPDATE etl_audit.refresh_runs SET outcome = 'failed', error = 'rewritten'",
        "UPDATE etl_audit.step_attempts SET status = 'failed'",
        "UPDATE etl_audit.check_results SET outcome = 'passed'",
        "UPDATE etl_audit.run_objects SET row_count = 0",
        "UPDATE etl_audit.run_endings SET outcome = 'completed'",
        "DELETE FROM etl_audit.refresh_runs",
        "DELETE FROM etl_audit.step_attempts",
        "TRUNCATE etl_audit.statement_runs",
    ]
    for statement in rewrites:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(refresher, statement)
    # The tables it refreshes are not its own: it may not hand them out, rename or drop them.
    for statement in (
        "ALTER TABLE analytics.mv_patient_summary RENAME TO renamed",
        "DROP TABLE analytics.mv_patient_summary",
        "ALTER TABLE reporting.patient_summary OWNER TO CURRENT_USER",
        "SELECT etl_audit.refresh_materialized_view('etl_audit.data_status'::regclass, false)",
    ):
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(refresher, statement)
    execute(refresher, "GRANT SELECT ON analytics.mv_patient_summary, reporting.patient_summary TO PUBLIC")
    for relation in ("analytics.mv_patient_summary", "reporting.patient_summary"):
        with pytest.raises(
            psycopg2.errors.InsufficientPrivilege
        ):  # granted nothing: a reader still reads nothing
            query(least_privilege.reader_url, f"SELECT count(*) FROM {relation}")
    assert query(demo_database, "SELECT DISTINCT outcome, error FROM etl_audit.refresh_runs") == [
        ("completed", None)
    ]
    endings = query(demo_database, "SELECT outcome FROM etl_audit.run_endings")
    assert endings == [("completed",), ("completed",)], "every ending, kept where nobody may change it"
    # What it may still write, it writes through etl_audit's functions: tests/test_audit_trust.py.


def test_hospitaldb_roles_again_takes_back_what_its_roles_should_not_hold(
    demo_database, least_privilege, prefect, monkeypatch
):
    refresher = make_url(least_privilege.refresher_url).username
    reader = make_url(least_privilege.reader_url).username
    owner = refresher.replace("refresher", "owner")
    # Grants an earlier version, or a hand, left behind.
    drift = [
        "GRANT SELECT ON etl_audit.refresh_runs TO PUBLIC",
        "GRANT SELECT ON analytics.mv_patient_summary TO PUBLIC",
        f"GRANT DELETE, TRUNCATE ON etl_audit.step_attempts TO {refresher}",
        f"GRANT SELECT ON staging.patient_contacts TO {reader}",
        f"GRANT SELECT ON reporting.patient_summary TO {reader}",
        f"GRANT CREATE ON SCHEMA analytics TO {refresher}",
        f"GRANT CREATE ON SCHEMA etl_audit TO {reader}",
    ]
    for statement in drift:
        execute(demo_database, statement)
    held = """
        SELECT has_table_privilege('public', 'etl_audit.refresh_runs', 'SELECT'),
               has_table_privilege('public', 'analytics.mv_patient_summary', 'SELECT'),
               has_table_privilege(%(refresher)s, 'etl_audit.step_attempts', 'DELETE'),
               has_table_privilege(%(refresher)s, 'etl_audit.step_attempts', 'TRUNCATE'),
               has_table_privilege(%(reader)s, 'staging.patient_contacts', 'SELECT'),
               has_table_privilege(%(reader)s, 'reporting.patient_summary', 'SELECT'),
               has_schema_privilege(%(refresher)s, 'analytics', 'CREATE'),
               has_schema_privilege(%(reader)s, 'etl_audit', 'CREATE')
    """
    names = {"refresher": refresher, "reader": reader}
    assert query(demo_database, held, names) == [(True,) * 8], "the drift is in place"

    create_roles(demo_database, owner, refresher, reader)
    assert query(demo_database, held, names) == [(False,) * 8]
    needed = """
        SELECT has_table_privilege(%(reader)s, 'etl_audit.data_status', 'SELECT'),
               has_function_privilege(%(refresher)s, 'etl_audit.open_attempt(uuid, text, integer, uuid)', 'EXECUTE'),
               has_table_privilege(%(refresher)s, 'reporting.patient_summary', 'INSERT')
    """
    assert query(demo_database, needed, names) == [(True, True, True)], "what the SQL needs, granted again"
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
    assert run_flow().is_completed() and run_flow().is_completed(), "it still refreshes, twice"


def test_a_reader_locking_data_status_stalls_neither_the_audit_nor_for_ever_an_upgrade(
    demo_database, least_privilege
):
    """A reader may LOCK its view (ACCESS SHARE, down to etl_audit's tables); an upgrade's ALTERs then
    wait, and every audit write would queue behind them: the upgrade gives way and tries again."""
    runs_before = query(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs")[0][0]
    reader = psycopg2.connect(least_privilege.reader_url)
    upgrader = psycopg2.connect(demo_database)
    upgrader.autocommit = True
    try:
        with reader.cursor() as cursor:
            cursor.execute(
                "LOCK TABLE etl_audit.data_status IN ACCESS SHARE MODE"
            )  # held: an open transaction
        execute(
            demo_database, "COMMENT ON SCHEMA etl_audit IS 'hospitaldb-refresh audit trail, an older schema'"
        )
        upgrade = InBackground(
            lambda: upgrade_schema(upgrader, SqlFiles(), lock_wait_seconds=0.2, tries=10_000)
        )
        upgrade.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted"
        pid = upgrader.get_backend_pid()
        for _ in range(600):  # until the upgrade is seen waiting for the reader
            if query(demo_database, waiting, (pid,))[0][0]:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the upgrade never waited for the reader's lock")
        # An audit write while the upgrade waits: it goes through (on 1.5.0 it queued behind the upgrade).
        execute(
            demo_database,
            "SET lock_timeout = '20s'; INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps) "
            "VALUES (%s, 'written while an upgrade waits', '{}')",
            (str(uuid.uuid4()),),
        )
        assert upgrade.is_alive(), "the upgrade still waits for the reader"
        reader.rollback()
        upgrade.join(120)
        assert not upgrade.is_alive() and upgrade.error is None, upgrade.error
    finally:
        reader.close()
        upgrader.close()
    (marker,) = query(demo_database, "SELECT obj_description('etl_audit'::regnamespace, 'pg_namespace')")[0]
    assert marker.startswith("hospitaldb-refresh audit trail, schema ") and "older" not in marker
    assert query(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs")[0][0] == runs_before + 1


def test_a_broken_audit_trail_does_not_fail_a_local_refresh(demo_database, prefect):
    execute(demo_database, "ALTER TABLE etl_audit.step_attempts RENAME TO step_attempts_broken")
    state = run_flow()
    assert state.is_completed()


def test_where_the_audit_is_required_a_run_it_cannot_record_publishes_nothing(
    demo_database, prefect, monkeypatch
):
    monkeypatch.setenv("HOSPITALDB_AUDIT_REQUIRED", "true")  # what a deployment's run does by default
    add_source_rows(demo_database)
    before = checksums(demo_database)
    execute(demo_database, "ALTER TABLE etl_audit.step_attempts RENAME TO step_attempts_broken")

    state = run_flow()

    assert state.is_failed()
    assert "the audit trail (etl_audit) cannot be written" in error_text(state)
    assert checksums(demo_database) == before, "nothing published that is on no record"


def test_freshness_check_alerts_when_stale_once_per_period_and_stays_quiet_when_fresh(
    demo_database, alert_blocks, smtp_server, webhook_server
):
    never = hospitaldb_freshness_check(**alert_blocks)
    assert never == {"stale_steps": [STEP1, STEP2, STEP3], "alerted": True}
    assert (
        smtp_server.received[0].message["Subject"]
        == "[HospitalDB] Data is stale: no successful refresh recorded"
    )

    assert run_flow().is_completed()
    execute(demo_database, "DELETE FROM etl_audit.freshness_alerts")
    assert hospitaldb_freshness_check(**alert_blocks) == {"stale_steps": [], "alerted": False}
    assert len(smtp_server.received) == 1, "fresh: no alert"

    execute(
        demo_database,
        "UPDATE etl_audit.step_attempts SET finished_at = finished_at - interval '30 hours' WHERE step = %s",
        (STEP3,),
    )
    assert hospitaldb_freshness_check(**alert_blocks) == {"stale_steps": [STEP3], "alerted": True}
    stale = smtp_server.received[1]
    assert stale.message["Subject"] == "[HospitalDB] Data is stale: no successful refresh for 30 h"
    assert "refresh_dashboards" in stale.text and "threshold 26 h" in stale.text
    assert len(webhook_server.posts) == 2

    assert hospitaldb_freshness_check(**alert_blocks) == {"stale_steps": [STEP3], "alerted": False}
    assert len(smtp_server.received) == 2, "still stale: no second alert within realert_hours"
    assert hospitaldb_freshness_check(realert_hours=0, **alert_blocks)["alerted"] is True
    assert hospitaldb_freshness_check(max_age_hours=48, **alert_blocks)["stale_steps"] == []
    assert Decimal(30) <= Decimal(str(monitor(demo_database, "last_successful_refresh")[2]["hours_ago"]))
