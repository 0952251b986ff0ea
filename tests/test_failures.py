"""Failures: a failed step changes nothing, transient errors are retried, the rest are not."""

from __future__ import annotations

import textwrap
import time

import pytest

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.deadline import Limits, RunDeadline, RunTimeLimitReached
from hospitaldb.engine.db.errors import as_step_error
from hospitaldb.settings import SQL_DIR
from hospitaldb_testing.db import (
    REFRESHED_OBJECTS,
    STEP1_VIEWS,
    STEP2_TABLES,
    STEP3_TABLES,
    add_source_rows,
    execute,
    query,
    scalar,
    snapshot,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.runs import (
    InBackground,
    TableLock,
    error_text,
    run_flow,
    task_runs,
    wait_for_blocked_refresh,
)


def step_files_in(folder, monkeypatch, sql: str) -> None:
    """Point the flow at a folder of step files whose phase 2 file holds sql."""
    (folder / "refresh_phase2_materialized_views.sql").write_text(sql)
    monkeypatch.setenv(SQL_DIR.name, str(folder))


def test_failing_statement_in_step_2_keeps_previous_data_and_stops_step_3(demo_database, prefect):
    assert run_flow().is_completed()
    before = snapshot(demo_database, STEP2_TABLES + STEP3_TABLES)
    add_source_rows(demo_database)
    # A refund recorded as a huge negative payment: the day's paid total goes negative,
    # which reporting.revenue_summary's CHECK refuses, at the step's last table.
    execute(
        demo_database,
        "INSERT INTO staging.payments VALUES (999999991, 90000011, -1000000, '2026-07-09', 'cash')",
    )

    state = run_flow(retries=3)

    assert state.is_failed()
    message = error_text(state)
    assert "refresh_phase3_reporting_tables failed at sql/refresh_phase3_reporting_tables.sql:" in message
    assert (
        "check_violation on reporting.revenue_summary, constraint revenue_summary_paid_amount_check"
        in message
    )
    assert "SQLSTATE 23514" in message
    assert snapshot(demo_database, STEP2_TABLES + STEP3_TABLES) == before
    runs = task_runs(state)
    assert runs["refresh_phase2_materialized_views"].state.is_completed()
    assert runs["refresh_phase3_reporting_tables"].run_count == 1, "a constraint violation is not retried"
    assert "refresh_dashboards" not in runs
    # Step 1 had committed on its own: the views already show the new rows.
    assert (
        scalar(
            demo_database, "SELECT paid_amount FROM analytics.mv_billing_summary WHERE billing_id = 90000011"
        )
        == -999750
    )


def test_undefined_table_fails_at_once_and_rolls_back_the_whole_step(demo_database, prefect):
    assert run_flow().is_completed()
    add_source_rows(demo_database)
    views = REFRESHED_OBJECTS[:3]
    before = snapshot(demo_database, views)
    execute(demo_database, "DROP TABLE analytics.mv_branch_billing_summary")

    state = run_flow(retries=3)

    message = error_text(state)
    assert 'relation "analytics.mv_branch_billing_summary" does not exist' in message
    assert "sql/refresh_phase2_materialized_views.sql:176" in message
    assert task_runs(state)["refresh_phase2_materialized_views"].run_count == 1
    assert snapshot(demo_database, views) == before, "statements 1-3 of the step were rolled back"


def test_syntax_error_refuses_the_run_before_any_step_and_names_file_and_line(
    demo_database, prefect, tmp_path, monkeypatch
):
    step_files_in(
        tmp_path, monkeypatch, "-- refresh\nREFRESH MATERIALIZED VIEW analytics.mv_visit_summary;\nSELEC 1;\n"
    )

    state = run_flow(retries=3, steps=["refresh_phase2_materialized_views"])

    assert state.is_failed()
    message = error_text(state)
    assert 'syntax error at or near "SELEC"' in message
    assert f"{tmp_path}/refresh_phase2_materialized_views.sql:3" in message
    assert task_runs(state) == {}, "refused before any task: nothing to retry"


def test_terminated_backend_is_retried_and_the_run_completes_with_correct_data(demo_database, prefect):
    add_source_rows(demo_database)
    blocker = TableLock(demo_database, "reporting.patient_summary")
    run = InBackground(lambda: run_flow(retries=3))
    run.start()
    try:
        pid = wait_for_blocked_refresh(demo_database)
        execute(demo_database, "SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        blocker.release()
    run.join(timeout=120)

    state = run.result
    assert state.is_completed(), state.message
    runs = task_runs(state)
    assert runs["refresh_phase3_reporting_tables"].run_count == 2
    assert runs["refresh_phase2_materialized_views"].run_count == 1
    assert_matches_source(demo_database)


def test_lock_timeout_is_transient_and_gives_up_after_the_retries(demo_database, prefect):
    blocker = TableLock(demo_database, "dashboards.daily_revenue")
    try:
        state = run_flow(retries=1, lock_timeout_seconds=0.3)
    finally:
        blocker.release()
    message = error_text(state)
    assert "canceling statement due to lock timeout" in message
    assert "SQLSTATE 55P03" in message
    assert task_runs(state)["refresh_dashboards"].run_count == 2


def test_a_statement_past_the_time_limit_fails_the_run_alerts_once_and_publishes_nothing_of_its_step(
    demo_database, prefect, alert_blocks, smtp_server, webhook_server
):
    # Airflow's execution_timeout: statement_timeout_seconds. Held up by a lock for longer than
    # the limit (lock_timeout longer still), step 2's statement is cancelled: not retried.
    add_source_rows(demo_database)
    before = snapshot(demo_database, STEP2_TABLES + STEP3_TABLES)
    blocker = TableLock(demo_database, "reporting.patient_summary")
    try:
        state = run_flow(retries=3, statement_timeout_seconds=2, lock_timeout_seconds=60, **alert_blocks)
    finally:
        blocker.release()
    assert state.is_failed()
    message = error_text(state)
    assert "canceling statement due to statement timeout" in message and "SQLSTATE 57014" in message
    assert task_runs(state)["refresh_phase3_reporting_tables"].run_count == 1, "a time limit is not retried"
    assert snapshot(demo_database, STEP2_TABLES + STEP3_TABLES) == before, "published past the limit"
    assert len(smtp_server.received) == 1 and len(webhook_server.posts) == 1
    assert "FAILED at refresh_phase3_reporting_tables" in smtp_server.received[0].message["Subject"]


def test_a_run_past_its_time_limit_ends_failed_alerted_and_publishes_nothing_after_the_limit(
    demo_database, prefect, alert_blocks, smtp_server, webhook_server
):
    # Airflow's dagrun_timeout: run_timeout_seconds. Step 3 waits on a lock its own timeouts
    # (an hour each) would wait out; the run's limit cancels it, and step 3 does not retry.
    add_source_rows(demo_database)
    before = snapshot(demo_database, STEP2_TABLES + STEP3_TABLES)
    blocker = TableLock(demo_database, "reporting.patient_summary")
    try:
        state = run_flow(
            retries=3,
            statement_timeout_seconds=3600,
            lock_timeout_seconds=3600,
            run_timeout_seconds=20,
            **alert_blocks,
        )
    finally:
        blocker.release()
    assert state.is_failed()
    message = error_text(state)
    assert "refresh_phase3_reporting_tables failed" in message
    assert "the run's time limit was reached (run_timeout_seconds=20)" in message
    runs = task_runs(state)
    assert runs["refresh_phase3_reporting_tables"].run_count == 1, "a time limit is not retried"
    assert "refresh_dashboards" not in runs, "a step started past the time limit"
    assert snapshot(demo_database, STEP2_TABLES + STEP3_TABLES) == before, "published past the limit"
    assert_matches_source(demo_database, STEP1_VIEWS)  # the step within the limit stays published
    assert len(smtp_server.received) == 1 and len(webhook_server.posts) == 1
    assert "FAILED at refresh_phase3_reporting_tables" in smtp_server.received[0].message["Subject"]


def test_a_session_past_the_time_limit_is_refused_and_a_statement_at_it_cancelled(demo_database):
    target = target_from_url(demo_database, "test")
    expired = Limits(3600, 3600, deadline=RunDeadline(1, time.monotonic() - 1))
    with pytest.raises(RunTimeLimitReached, match="before its first step: nothing was refreshed"):
        target.connect(expired)
    connection = target.connect(Limits(3600, 3600, deadline=RunDeadline.starting_now(1)))
    try:
        with pytest.raises(RunTimeLimitReached) as raised, as_step_error("a_step"):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_sleep(30)")
        assert str(raised.value).startswith("a_step failed: the run's time limit was reached")
        assert not raised.value.transient
    finally:
        connection.close()
    # Bookkeeping (the audit session's limits) is never bound by the run's deadline.
    assert expired.at_most(60).deadline is None


@pytest.mark.parametrize("steps", [["no_such_step"], []])
def test_bad_steps_parameter_is_refused(demo_database, prefect, steps):
    state = run_flow(steps=steps)
    assert state.is_failed()
    assert "refresh_phase2_materialized_views" in error_text(state), "the message lists the valid steps"
    assert scalar(demo_database, "SELECT count(*) FROM reporting.patient_summary") == 0


def test_only_selected_steps_run_in_pipeline_order(demo_database, prefect):
    state = run_flow(steps=["refresh_dashboards", "refresh_phase2_materialized_views"])
    assert state.is_completed()
    assert [result["step"] for result in state.result()] == [
        "refresh_phase2_materialized_views",
        "refresh_dashboards",
    ]
    assert "refresh_phase3_reporting_tables" not in task_runs(state)
    assert scalar(demo_database, "SELECT count(*) FROM reporting.patient_summary") == 0
    assert_matches_source(demo_database, REFRESHED_OBJECTS[:4])


def test_literals_comments_and_dollar_quoting_run_as_written(new_database, prefect, tmp_path, monkeypatch):
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", new_database)
    # What a step may not hold (engine.sql.allowed), made beforehand as an administrator would.
    execute(
        new_database,
        "CREATE TABLE public.notes (note text);"
        "CREATE FUNCTION public.tricky() RETURNS text LANGUAGE sql AS $body$ SELECT 'x; y :z' $body$",
    )
    step_files_in(
        tmp_path,
        monkeypatch,
        textwrap.dedent(
            """\
            -- a comment with a ; and a :name
            DELETE FROM public.notes;
            /* block comment; with :name */
            INSERT INTO public.notes VALUES ('semicolon; and :name and :other'), ('it''s :x');
            INSERT INTO public.notes SELECT $$dollar quoted; :name$$;
            INSERT INTO public.notes SELECT public.tricky();
            INSERT INTO public.notes SELECT $t$ with $$ inside; :z $t$;
            INSERT INTO public.notes VALUES (E'percent % and %s stay');
            """
        ),
    )
    state = run_flow(retries=0, steps=["refresh_phase2_materialized_views"])

    assert state.is_completed(), error_text(state)
    assert state.result()[0]["statements"] == 6
    notes = {row[0] for row in query(new_database, "SELECT note FROM public.notes")}
    assert notes == {
        "semicolon; and :name and :other",
        "it's :x",
        "dollar quoted; :name",
        "x; y :z",
        " with $$ inside; :z ",
        "percent % and %s stay",
    }
