"""Data you can trust: checks inside each step's transaction, source checks before the first write,
the shrink guard and data_status, each proven on real PostgreSQL with checksums of every refreshed object."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from psycopg2 import sql
from sqlalchemy.engine import make_url

from hospitaldb.paths import PROJECT_ROOT, PROJECT_SQL_DIR
from hospitaldb.settings import ADMIN_DATABASE_URL, SQL_DIR
from hospitaldb_testing.db import (
    REFRESHED_OBJECTS,
    checksum_query,
    checksums,
    execute,
    install_released_audit,
    query,
    remove_four_visits_in_five,
    scalar,
)
from hospitaldb_testing.runs import InBackground, error_text, run_flow, run_logs, task_runs

SECRET_AMOUNT = "98765.43"
SECRET_CODE = "ZZ-PATIENT-SECRET"


def run_id(state) -> str:
    return str(state.state_details.flow_run_id)


def steps_attempted(url: str, state) -> list[str]:
    rows = query(
        url,
        "SELECT step FROM etl_audit.step_attempts WHERE flow_run_id = %s AND step <> 'check_sources'",
        (run_id(state),),
    )
    return [row[0] for row in rows]


def test_emptied_sources_fail_before_any_write_with_one_alert(demo_database, alert_blocks, smtp_server):
    assert run_flow(**alert_blocks).is_completed()
    before = checksums(demo_database)
    execute(
        demo_database, "DELETE FROM staging.payments; DELETE FROM staging.billing; DELETE FROM staging.visits"
    )

    state = run_flow(**alert_blocks)

    assert state.is_failed()
    assert checksums(demo_database) == before, "every refreshed object is unchanged"
    assert steps_attempted(demo_database, state) == [], "no step started"
    assert "source incomplete: staging.visits has no rows" in error_text(state)
    (mail,) = smtp_server.received
    assert "source incomplete" in mail.message["Subject"] and "staging.visits" in mail.message["Subject"]
    assert "check_sources" in mail.text
    outcomes = query(
        demo_database,
        "SELECT check_name, outcome FROM etl_audit.check_results WHERE flow_run_id = %s ORDER BY 1",
        (run_id(state),),
    )
    assert ("source staging.visits", "failed") in outcomes
    assert ("source staging.branches", "passed") in outcomes


def test_a_stale_source_fails_the_run_and_skip_source_checks_lets_a_reload_through(demo_database, prefect):
    execute(demo_database, "UPDATE staging.visits SET visit_date = visit_date - 30")
    before = checksums(demo_database)

    state = run_flow()

    assert state.is_failed()
    assert "source stale: staging.visits's newest data" in error_text(state)
    assert checksums(demo_database) == before
    assert run_flow(skip_source_checks=True).is_completed()


def test_a_billing_row_that_breaks_reconciliation_fails_its_check_without_retry(
    demo_database, alert_blocks, smtp_server
):
    assert run_flow(**alert_blocks).is_completed()
    before = checksums(demo_database)
    # Staging without foreign keys (common upstream): a billing line whose visit does not exist.
    execute(
        demo_database,
        f"""
        ALTER TABLE staging.billing DROP CONSTRAINT billing_visit_id_fkey;
        INSERT INTO staging.billing VALUES (99999991, 424242424, '{SECRET_CODE}', {SECRET_AMOUNT}, 'paid', current_date);
        """,
    )

    state = run_flow(retries=3, **alert_blocks)

    assert state.is_failed()
    assert checksums(demo_database) == before, "every refreshed object is unchanged"
    assert task_runs(state)["refresh_phase2_materialized_views"].run_count == 1, "a check is not retried"
    message = error_text(state)
    check_file = "sql/checks/refresh_phase2_materialized_views/analytics_reconciles_with_staging.sql"
    assert f"check analytics_reconciles_with_staging ({check_file}) failed: 3 violating rows" in message
    (mail,) = smtp_server.received
    assert "refresh_phase2_materialized_views" in mail.message["Subject"]
    assert "check analytics_reconciles_with_staging failed" in mail.message["Subject"]
    assert check_file in mail.text and "3 violating rows" in mail.text
    logs = run_logs(state)
    for secret in (SECRET_AMOUNT, SECRET_CODE, "424242424"):
        assert secret not in mail.text and secret not in logs and secret not in message
    failed = query(
        demo_database,
        "SELECT check_name, violating_rows FROM etl_audit.check_results "
        "WHERE flow_run_id = %s AND outcome = 'failed'",
        (run_id(state),),
    )
    assert failed == [("analytics_reconciles_with_staging", 3)]


def test_a_warn_check_that_fires_lets_the_run_complete_and_is_on_record(demo_database, prefect):
    execute(
        demo_database,
        "INSERT INTO staging.visits VALUES (9100001, 1, 1, 1, current_date - 10, 'outpatient')",
    )

    state = run_flow()

    assert state.is_completed()
    results = state.result()
    phase2 = results[0]
    assert [(c["name"], c["violating_rows"]) for c in phase2["checks"] if c["outcome"] == "warned"] == [
        ("unbilled_visits", 1)
    ]
    assert "check unbilled_visits" in run_logs(state) and "warned: 1 violating row" in run_logs(state)
    assert query(
        demo_database,
        "SELECT step, severity, violating_rows FROM etl_audit.check_results "
        "WHERE flow_run_id = %s AND outcome = 'warned'",
        (run_id(state),),
    ) == [("refresh_phase2_materialized_views", "warn", 1)]
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["hospitaldb-refresh-steps"])),
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])),
        )
    rows = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    assert "1 warned: unbilled_visits (1 row)" in rows[0]["checks"]


def test_the_shrink_guard_refuses_an_80_percent_loss_unless_allowed(demo_database, prefect):
    assert run_flow().is_completed()
    before = checksums(demo_database)
    remove_four_visits_in_five(demo_database)

    guarded = run_flow(skip_source_checks=True)
    assert guarded.is_failed()
    assert "check shrink_guard (sql/checks/all_steps/shrink_guard.sql) failed" in error_text(guarded)
    assert checksums(demo_database) == before

    refused_at_source = run_flow()
    assert "source incomplete: staging.visits" in error_text(refused_at_source)

    allowed = run_flow(skip_source_checks=True, allow_shrink=True)
    assert allowed.is_completed()
    visits = scalar(demo_database, "SELECT count(*) FROM staging.visits")
    assert scalar(demo_database, "SELECT count(*) FROM analytics.mv_visit_summary") == visits


def test_the_shrink_guard_counts_before_a_step_that_may_truncate(
    demo_database, prefect, tmp_path, monkeypatch
):
    # A table is counted once, after its step: its rows before are derived from PostgreSQL's row
    # counters for the transaction. Those do not see a TRUNCATE, so a step that may truncate is
    # counted before it runs too: a reload that keeps a fifth of the rows is refused, not taken for
    # a table that grew from nothing.
    assert run_flow().is_completed()
    folder = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, folder)
    monkeypatch.setenv(SQL_DIR.name, str(folder))
    (folder / "incremental" / "refresh_dashboards.sql").unlink()  # it would refresh more than this
    (folder / "refresh_dashboards.sql").write_text(
        "-- A reload that lost most of its source.\n"
        "CREATE TEMP TABLE kept ON COMMIT DROP AS\n"
        "SELECT * FROM dashboards.patient_activity WHERE patient_id % 5 = 0;\n"
        "-- allow-blocking: a test of the shrink guard\n"
        "TRUNCATE dashboards.patient_activity;\n"
        "INSERT INTO dashboards.patient_activity SELECT * FROM kept;\n"
    )
    before = checksums(demo_database)
    reloaded = run_flow(steps=["refresh_dashboards"], skip_source_checks=True)
    assert reloaded.is_failed()
    assert "refresh_dashboards failed: check shrink_guard (" in error_text(reloaded)
    assert checksums(demo_database) == before


def test_a_reader_is_never_blocked_while_checks_run(demo_database, prefect, tmp_path, monkeypatch):
    assert run_flow().is_completed()
    sql_dir = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, sql_dir)
    # In step 1, so that no step has committed yet while it runs.
    slow = sql_dir / "checks" / "refresh_phase2_materialized_views" / "zz_slow_check.sql"
    slow.write_text(
        "-- A slow check (random() keeps the planner from skipping the sleep).\nSELECT 1 FROM pg_sleep(3) AS s WHERE random() < 0;\n"
    )
    monkeypatch.setenv(SQL_DIR.name, str(sql_dir))
    execute(
        demo_database, "INSERT INTO staging.visits VALUES (9100002, 2, 2, 2, current_date - 1, 'emergency')"
    )
    before = checksums(demo_database)

    run = InBackground(run_flow)
    run.start()
    deadline = time.monotonic() + 60
    while not query(
        demo_database,
        "SELECT 1 FROM pg_stat_activity WHERE query LIKE '%%pg_sleep(3)%%' AND application_name = 'hospitaldb-refresh' "
        "AND datname = current_database()",
    ):
        assert run.is_alive(), "the run ended before its slow check"
        assert time.monotonic() < deadline, "the slow check never started"
        time.sleep(0.05)
    reader = psycopg2.connect(demo_database)
    try:
        with reader.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
            seen = {}
            for name in REFRESHED_OBJECTS:
                cursor.execute(checksum_query(name))
                seen[name] = cursor.fetchone()
        reader.rollback()
    finally:
        reader.close()
    run.join(timeout=120)

    assert seen == before, "readers see the previous, complete data while the step is being checked"
    assert run.result.is_completed()
    assert checksums(demo_database) != before


def test_data_status_for_a_read_only_role_after_good_failed_and_stale_runs(demo_database, prefect):
    role = f"bi_reader_{uuid.uuid4().hex[:8]}"
    execute(demo_database, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        assert run_flow().is_completed()
        execute(
            demo_database,
            sql.SQL(
                "GRANT USAGE ON SCHEMA etl_audit TO {0}; GRANT SELECT ON etl_audit.data_status TO {0}"
            ).format(sql.Identifier(role)),
        )
        reader_url = (
            make_url(demo_database).set(username=role, password=None).render_as_string(hide_password=False)
        )

        def status() -> dict[str, tuple]:
            rows = query(
                reader_url,
                "SELECT object_name, step, last_run_status, last_run_checks, is_stale, published_at IS NOT NULL "
                "FROM etl_audit.data_status",
            )
            return {row[0]: row[1:] for row in rows}

        good = status()
        assert set(good) == set(REFRESHED_OBJECTS)
        assert {row[1:] for row in good.values()} == {("completed", "passed", False, True)}
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(reader_url, "SELECT * FROM etl_audit.step_attempts")

        # An overpayment: outstanding goes below zero, which no_negative_outstanding refuses.
        execute(
            demo_database,
            "UPDATE staging.payments SET amount = amount + 100000 "
            "WHERE payment_id = (SELECT min(payment_id) FROM staging.payments)",
        )
        assert run_flow().is_failed()
        failed = status()
        by_step = {row[0]: row[1:4] for row in failed.values()}
        assert by_step["refresh_phase2_materialized_views"] == ("failed", "passed", False)
        assert by_step["refresh_phase3_reporting_tables"][0:2] == ("failed", "failed")
        assert by_step["refresh_dashboards"][0:2] == ("failed", "not run")

        # 30 hours later: each object was published when its step's attempt finished.
        execute(
            demo_database,
            "UPDATE etl_audit.step_attempts SET finished_at = finished_at - interval '30 hours';"
            "UPDATE etl_audit.run_objects SET published_at = published_at - interval '30 hours'",
        )
        stale = status()
        assert all(row[3] for row in stale.values()), "nothing published for 30 hours: stale"
    finally:
        execute(demo_database, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


@pytest.mark.parametrize("release", ["first_release", "previous_main", "1_2_0"])
def test_an_existing_install_is_upgraded_in_place_on_the_next_run(demo_database, prefect, release):
    execute(demo_database, "DROP SCHEMA etl_audit CASCADE")
    execute(demo_database, (Path(__file__).parent / "fixtures" / f"etl_audit_{release}.sql").read_text())
    old_run = str(uuid.uuid4())
    execute(
        demo_database,
        "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, finished_at) "
        "VALUES (%s, 'last-nights-run', ARRAY['refresh_dashboards'], 'completed', now() - interval '1 day')",
        (old_run,),
    )
    if release == "1_2_0":  # a release that records the outcome too
        execute(demo_database, "UPDATE etl_audit.refresh_runs SET outcome = 'completed'")

    state = run_flow()

    assert state.is_completed()
    assert scalar(
        demo_database, "SELECT flow_run_name FROM etl_audit.refresh_runs WHERE flow_run_id = %s", (old_run,)
    ) == ("last-nights-run"), "existing history is kept"
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.check_results WHERE outcome = 'passed'") > 0
    statuses = query(
        demo_database, "SELECT DISTINCT last_run_status, last_run_checks, is_stale FROM etl_audit.data_status"
    )
    assert statuses == [("completed", "passed", False)]
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.data_status") == len(REFRESHED_OBJECTS)
    assert query(demo_database, "SELECT DISTINCT outcome FROM etl_audit.refresh_runs") == [("completed",)]
    # 1.3.0: each attempt names its Prefect task run (the record heals from it), notices have a table.
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_audit.step_attempts WHERE task_run_id IS NULL") == 0
    )
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.run_notices") == 0
    assert query(
        demo_database, "SELECT DISTINCT held_back_since, held_back_because FROM etl_audit.data_status"
    ) == [(None, None)]
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.run_objects WHERE reads IS NOT NULL") == len(
        REFRESHED_OBJECTS
    )


def test_a_broken_check_file_fails_the_run_before_any_write(demo_database, prefect, tmp_path, monkeypatch):
    assert run_flow().is_completed()
    sql_dir = tmp_path / "sql"
    shutil.copytree(PROJECT_SQL_DIR, sql_dir)
    (sql_dir / "checks" / "refresh_dashboards" / "broken.sql").write_text(
        "-- Two statements are not a check.\nSELECT 1;\nDELETE FROM dashboards.daily_revenue;\n"
    )
    monkeypatch.setenv(SQL_DIR.name, str(sql_dir))
    execute(
        demo_database, "INSERT INTO staging.visits VALUES (9100003, 3, 3, 3, current_date - 1, 'emergency')"
    )
    before = checksums(demo_database)

    state = run_flow()

    assert state.is_failed()
    assert f"{sql_dir}/checks/refresh_dashboards/broken.sql:3: a check is exactly one SELECT" in error_text(
        state
    )
    assert "Nothing was refreshed" in error_text(state)
    assert checksums(demo_database) == before
    assert steps_attempted(demo_database, state) == []


@pytest.mark.parametrize(
    ("constraint", "orphan_visit", "check"),
    [
        (
            "visits_patient_id_fkey",
            "INSERT INTO staging.visits VALUES (9100004, 777777777, 1, 1, current_date - 1, 'outpatient')",
            "patient_summary_counts_every_visit",
        ),
        (
            "visits_branch_id_fkey",
            "INSERT INTO staging.visits VALUES (9100005, 1, 1, 99, current_date - 1, 'outpatient')",
            "branch_billing_summary_counts_every_visit",
        ),
    ],
)
def test_a_visit_of_an_unknown_patient_or_branch_is_refused(
    demo_database, prefect, constraint, orphan_visit, check
):
    assert run_flow().is_completed()
    before = checksums(demo_database)
    # Staging without foreign keys, as many upstream loads have it.
    execute(
        demo_database,
        sql.SQL("ALTER TABLE staging.visits DROP CONSTRAINT {}").format(sql.Identifier(constraint)),
    )
    execute(demo_database, orphan_visit)

    state = run_flow()

    assert state.is_failed()
    message = error_text(state)
    assert f"check {check}" in message
    assert "failed: 1 violating row" in message
    assert checksums(demo_database) == before


def test_a_least_privilege_install_of_1_2_0_upgrades_with_hospitaldb_roles(
    views_warehouse, least_privilege, prefect, monkeypatch
):
    demo_database = views_warehouse  # 1.2.0's step 1: materialized views
    refresher = make_url(least_privilege.refresher_url).username
    owner = refresher.replace("_refresher_", "_owner_")
    views = [
        row[0] for row in query(demo_database, "SELECT schemaname || '.' || matviewname FROM pg_matviews")
    ]
    # As 1.2.0 left it: the refresher owns the views; etl_audit at 1.2.0's schema, the owner's.
    for view in views:
        schema, name = view.split(".")
        execute(
            demo_database,
            sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(
                sql.Identifier(schema, name), sql.Identifier(refresher)
            ),
        )
    install_released_audit(demo_database, "etl_audit_1_2_0.sql", owner, refresher)
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)

    before = run_flow()  # 1.3.0 before `hospitaldb roles`: refreshes, but may not upgrade the audit
    assert before.is_completed(), error_text(before)
    assert "etl_audit is missing or older than this version" in run_logs(before)

    done = subprocess.run(
        [str(Path(sys.executable).with_name("hospitaldb")), "roles", "--owner", owner, "--refresher", refresher,
         "--reader", make_url(least_privilege.reader_url).username],
        cwd=PROJECT_ROOT,
        env={**os.environ, ADMIN_DATABASE_URL.name: demo_database},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr

    after = run_flow()
    assert after.is_completed(), error_text(after)
    owners = {row[0] for row in query(demo_database, "SELECT DISTINCT matviewowner FROM pg_matviews")}
    assert owners == {owner}, "the views are the owner's now"
    assert scalar(demo_database, "SELECT count(*) FROM etl_audit.run_endings") == 1, (
        "and the audit is 1.3.0's"
    )
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        execute(least_privilege.refresher_url, f"DROP MATERIALIZED VIEW {views[0]}")
