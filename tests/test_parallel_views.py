"""parallel_views on real PostgreSQL: step 1's views refreshed in several sessions.

Step 1 here is the reference's as it was before 1.9.0, four materialized views (the views_warehouse
fixture): since 1.9.0 the reference maintains tables, and parallel_views serves a warehouse of views.

A group of views (those that share a check) starts once every view it reads has committed
and commits on its own after its checks; independent groups run side by side; the first
failure stops the rest and says what had committed. To catch the runs mid-step, a test's
own transaction holds an index build on a view: its SHARE lock makes that view's
REFRESH ... CONCURRENTLY wait (dashboard readers still pass), like a long maintenance job.
"""

from __future__ import annotations

import shutil
import signal
import time
import uuid
from pathlib import Path

import psycopg2
import pytest
from psycopg2 import sql

from hospitaldb.engine.steps import STEPS
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import (
    STEP1_VIEWS,
    STEP2_TABLES,
    STEP3_TABLES,
    add_source_rows,
    as_views_warehouse,
    checksums,
    execute,
    query,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.runs import (
    InBackground,
    error_text,
    flow_process,
    run_flow,
    run_logs,
    wait_for_blocked_refresh,
)

BILLING, VISITS, PATIENTS, BRANCHES = STEP1_VIEWS


@pytest.fixture
def demo_database(demo_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Step 1 as materialized views, as the reference had them before 1.9.0 and a team's warehouse may."""
    monkeypatch.setenv(SQL_DIR.name, str(as_views_warehouse(demo_database, tmp_path / "views_sql")))
    return demo_database


class ViewHeld:
    """An uncommitted CREATE INDEX on a view: its refresh waits until release() (readers pass)."""

    def __init__(self, url: str, view: str) -> None:
        self.connection = psycopg2.connect(url)
        schema, name = view.split(".")
        with self.connection.cursor() as cursor:
            cursor.execute(
                sql.SQL("CREATE INDEX held_by_test ON {} ((1))").format(sql.Identifier(schema, name))
            )

    def release(self) -> None:
        self.connection.rollback()
        self.connection.close()


def published(url: str, state_or_run_id) -> dict[str, bool]:
    """Which objects the run has published so far, as etl_audit records it."""
    run_id = getattr(getattr(state_or_run_id, "state_details", None), "flow_run_id", state_or_run_id)
    return dict(
        query(
            url,
            "SELECT object_name, published_at IS NOT NULL FROM etl_audit.run_objects WHERE flow_run_id = %s",
            (str(run_id),),
        )
    )


def latest_run_id(url: str) -> str:
    return query(url, "SELECT flow_run_id FROM etl_audit.refresh_runs ORDER BY started_at DESC LIMIT 1")[0][0]


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never held")
        time.sleep(0.05)


def test_independent_views_publish_side_by_side_and_each_after_what_it_reads(demo_database, prefect):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    held = ViewHeld(demo_database, PATIENTS)
    try:
        run = InBackground(lambda: run_flow(parallel_views=2))
        run.start()
        wait_for_blocked_refresh(demo_database)
        run_id = latest_run_id(demo_database)
        # The per-patient view waits; the per-branch view, which shares no check with it, publishes.
        wait_until(lambda: published(demo_database, run_id).get(BRANCHES))
        mid_step = published(demo_database, run_id)
    finally:
        held.release()
    run.join(120)

    assert run.result.is_completed()
    assert mid_step == {
        BILLING: True,
        VISITS: True,
        PATIENTS: False,
        BRANCHES: True,
        **dict.fromkeys(STEP2_TABLES + STEP3_TABLES, False),
    }
    # Each view read the new rows of the views before it: every object equals what staging says.
    assert_matches_source(demo_database)
    assert set(published(demo_database, run.result).values()) == {True}


def test_serially_nothing_of_the_step_publishes_while_one_view_waits(demo_database, prefect):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    before = checksums(demo_database, STEP1_VIEWS)
    held = ViewHeld(demo_database, PATIENTS)
    try:
        run = InBackground(lambda: run_flow())
        run.start()
        wait_for_blocked_refresh(demo_database)
        mid_step = published(demo_database, latest_run_id(demo_database))
        unchanged = checksums(demo_database, STEP1_VIEWS)
    finally:
        held.release()
    run.join(120)

    assert run.result.is_completed()
    assert set(mid_step.values()) == {False}
    assert unchanged == before, "one transaction: readers see the old views until it commits"
    assert_matches_source(demo_database)


ORPHAN_PATIENT_VISIT = (
    "visits_patient_id_fkey",
    "INSERT INTO staging.visits VALUES (9100004, 777777777, 1, 1, current_date - 1, 'outpatient')",
)


def test_a_failing_view_stops_the_views_still_running_and_the_failure_says_what_committed(
    demo_database, prefect
):
    assert run_flow().is_completed()
    constraint, orphan_visit = ORPHAN_PATIENT_VISIT
    execute(
        demo_database,
        sql.SQL("ALTER TABLE staging.visits DROP CONSTRAINT {}").format(sql.Identifier(constraint)),
    )
    execute(demo_database, orphan_visit)
    before = checksums(demo_database)
    held = ViewHeld(demo_database, BRANCHES)  # still running when the per-patient view fails its check
    try:
        state = run_flow(parallel_views=2, retries=0)
    finally:
        held.release()

    assert state.is_failed()
    message = error_text(state)
    assert "check patient_summary_counts_every_visit (" in message
    assert f"committed before the failure, each after its own checks: {BILLING}, {VISITS}" in message
    after = checksums(demo_database)
    assert [name for name in before if after[name] != before[name]] == [VISITS], (
        "the billing and visit views published (the visit view has the new visit); the rest kept theirs"
    )
    assert query(
        demo_database, "SELECT count(*) FROM analytics.mv_visit_summary WHERE visit_id = 9100004"
    ) == [(1,)]
    assert published(demo_database, state) == {
        BILLING: True,
        VISITS: True,
        **dict.fromkeys((PATIENTS, BRANCHES, *STEP2_TABLES, *STEP3_TABLES), False),
    }
    held_back = dict(
        query(
            demo_database,
            "SELECT object_name, reason FROM etl_audit.held_back WHERE flow_run_id = %s",
            (str(state.state_details.flow_run_id),),
        )
    )
    assert set(held_back) == {PATIENTS, BRANCHES, *STEP2_TABLES, *STEP3_TABLES}
    assert held_back[PATIENTS].startswith("the run failed at refresh_phase2_materialized_views")
    status = dict(
        query(demo_database, "SELECT object_name, held_back_since IS NULL FROM etl_audit.data_status")
    )
    assert status[VISITS] and status[BILLING], "data_status: published by this run, not held back"
    assert not status[PATIENTS] and not status[BRANCHES]


def test_a_failure_in_the_first_group_starts_no_other(demo_database, prefect):
    assert run_flow().is_completed()
    execute(demo_database, "ALTER TABLE staging.billing DROP CONSTRAINT billing_visit_id_fkey")
    # A billing line whose visit is missing: mv_billing_summary drops it, its reconciliation fails.
    execute(
        demo_database,
        "INSERT INTO staging.billing VALUES (99000001, 888888888, 'LAB', 10.00, 'pending', current_date - 1)",
    )
    before = checksums(demo_database)

    state = run_flow(parallel_views=2, retries=0)

    assert state.is_failed()
    assert "check analytics_reconciles_with_staging (" in error_text(state)
    assert checksums(demo_database) == before
    assert set(published(demo_database, state).values()) == {False}
    refreshed = query(
        demo_database,
        "SELECT s.summary FROM etl_audit.statement_runs AS s JOIN etl_audit.step_attempts AS a USING (attempt_id) "
        "WHERE a.flow_run_id = %s ORDER BY s.statement_number",
        (str(state.state_details.flow_run_id),),
    )
    assert len(refreshed) == 2, refreshed
    assert all("patient" not in summary and "branch" not in summary for (summary,) in refreshed), refreshed


def test_steps_that_are_not_all_views_stay_serial_and_the_run_says_so(demo_database, prefect):
    """Steps 2 and 3 hold other statements: parallel_views leaves them one transaction each."""
    assert run_flow().is_completed()
    state = run_flow(parallel_views=3, steps=["refresh_phase3_reporting_tables", "refresh_dashboards"])
    assert state.is_completed()
    assert "no selected step refreshes only materialized views" in run_logs(state)
    assert_matches_source(demo_database, STEP2_TABLES + STEP3_TABLES)


def test_objects_recorded_before_the_upgrade_keep_when_their_step_published_them(demo_database, prefect):
    """etl_audit of the previous main: data_status's per-object published_at comes from each old run's step."""
    previous_main = Path(__file__).parent / "fixtures" / "etl_audit_before_published_at.sql"
    execute(demo_database, "DROP SCHEMA etl_audit CASCADE")
    execute(demo_database, previous_main.read_text())
    good, failed = str(uuid.uuid4()), str(uuid.uuid4())
    for run, status, hours in ((good, "completed", 30), (failed, "failed", 5)):
        execute(
            demo_database,
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, started_at, "
            "finished_at) VALUES (%s, %s, ARRAY['refresh_phase2_materialized_views'], %s, "
            "now() - make_interval(hours => %s), now() - make_interval(hours => %s))",
            (run, f"old-{status}", status, hours + 1, hours),
        )
        execute(
            demo_database,
            "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, status, finished_at) "
            "VALUES (%s, 'refresh_phase2_materialized_views', 1, %s, now() - make_interval(hours => %s))",
            (run, status, hours),
        )
        for view in STEP1_VIEWS:
            execute(
                demo_database,
                "INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name) "
                "VALUES (%s, 'refresh_phase2_materialized_views', %s)",
                (run, view),
            )

    assert run_flow(steps=["refresh_dashboards"]).is_completed()

    status = {
        name: (hours, stale)
        for name, hours, stale in query(
            demo_database,
            "SELECT object_name, round(hours_since_published), is_stale FROM etl_audit.data_status",
        )
    }
    for view in STEP1_VIEWS:
        assert status[view] == (30, True), "published by the old completed run, not by the failed one"
    for table in STEP3_TABLES:
        assert status[table] == (0, False)
    assert query(
        demo_database,
        "SELECT count(*) FROM etl_audit.run_objects WHERE flow_run_id = %s AND published_at IS NULL",
        (failed,),
    ) == [(4,)]


def test_sigterm_while_a_group_waits_stops_every_session_and_records_what_had_committed(
    demo_database, prefect
):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    before = checksums(demo_database, (PATIENTS,))
    held = ViewHeld(demo_database, PATIENTS)
    process = flow_process(prefect, demo_database, "parallel_views=2, lock_timeout_seconds=120")
    try:
        wait_for_blocked_refresh(demo_database)
        run_id = latest_run_id(demo_database)
        wait_until(lambda: published(demo_database, run_id).get(BRANCHES))
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
        # The waiting group's session was cancelled and closed, not left behind the process.
        sessions = query(
            demo_database,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hospitaldb-refresh' "
            "AND datname = current_database()",
        )
    finally:
        held.release()
        process.kill()

    assert sessions == [(0,)], output
    assert checksums(demo_database, (PATIENTS,)) == before
    ((status, error),) = query(
        demo_database, "SELECT outcome, error FROM etl_audit.refresh_runs WHERE flow_run_id = %s", (run_id,)
    )
    assert status == "crashed", output
    assert f"but for what it had committed ({BILLING}, {VISITS}, {BRANCHES})" in error
    held_back = {
        row[0]
        for row in query(
            demo_database, "SELECT object_name FROM etl_audit.held_back WHERE flow_run_id = %s", (run_id,)
        )
    }
    assert held_back == {PATIENTS, *STEP2_TABLES, *STEP3_TABLES}


def test_parallel_workers_per_query_is_the_setting_of_every_step_session(
    demo_database, prefect, tmp_path, monkeypatch
):
    """A check in every step reads its own session's max_parallel_workers_per_gather."""
    sql_dir = tmp_path / "sql"
    shutil.copytree(tmp_path / "views_sql", sql_dir)
    for step in STEPS:
        (sql_dir / "checks" / step / "zz_parallel_workers.sql").write_text(
            "-- The session's parallel workers per query: what the run asked for.\n"
            "SELECT 1 AS not_as_asked WHERE current_setting('max_parallel_workers_per_gather') <> '1';\n"
        )
    monkeypatch.setenv(SQL_DIR.name, str(sql_dir))
    add_source_rows(demo_database)
    before = checksums(demo_database)

    # The server's own setting (PostgreSQL's default is 2): refused in step 1, nothing changed.
    assert run_flow().is_failed()
    assert checksums(demo_database) == before
    # Serially, and in the sessions of parallel views too.
    assert run_flow(parallel_workers_per_query=1).is_completed()
    assert_matches_source(demo_database)
    assert run_flow(parallel_workers_per_query=1, parallel_views=2).is_completed()
