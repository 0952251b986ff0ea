"""The audit records only what happened: the refresher writes it only through etl_audit's functions.

Each attack is the refresher's (its password lives on every worker host), on the reference HospitalDB
with the roles `hospitaldb roles` makes (the least_privilege fixture runs deployments/create_roles.py).
Before the functions, every one of them worked: INSERT and UPDATE were granted on every audit table.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg2
import psycopg2.errors
import pytest
from psycopg2 import sql
from sqlalchemy.engine import make_url

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb_testing.db import create_roles, execute, install_released_audit, query, scalar
from hospitaldb_testing.runs import error_text, run_flow

AUDIT_TABLES = [
    "refresh_runs",
    "step_attempts",
    "statement_runs",
    "check_results",
    "source_counts",
    "run_objects",
    "held_back",
    "run_notices",
    "freshness_alerts",
    "run_endings",
]


@contextmanager
def session(url: str, run: str | None = None) -> Iterator[psycopg2.extensions.cursor]:
    """A session of url; named as the audit session of run when given (anyone may name a session so)."""
    name = f"hospitaldb-refresh-audit-{run}" if run else "someone"
    connection = psycopg2.connect(url, application_name=name)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


def test_the_refresher_may_not_insert_or_update_any_audit_table(demo_database, least_privilege):
    refresher = make_url(least_privilege.refresher_url).username
    for table in AUDIT_TABLES:
        for privilege in ("INSERT", "UPDATE", "DELETE", "TRUNCATE"):
            assert not scalar(
                demo_database,
                "SELECT has_table_privilege(%s, %s, %s)",
                (refresher, f"etl_audit.{table}", privilege),
            ), f"{privilege} on etl_audit.{table}"
    forgeries = [
        # A step attempt completed in 2999: the freshness check would see every step fresh for ever.
        "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, status, finished_at) "
        "VALUES (gen_random_uuid(), 'refresh_dashboards', 1, 'completed', '2999-01-01')",
        # A freshness alert dated 2999: no stale-data alert would ever be sent again.
        "INSERT INTO etl_audit.freshness_alerts (sent_at, stale_steps) VALUES ('2999-01-01', '{}')",
        # A completed run with zero source counts: the next runs' baseline.
        "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, status, outcome, finished_at) "
        "VALUES (gen_random_uuid(), 'forged', '{}', 'completed', 'completed', now())",
        "INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count) VALUES (gen_random_uuid(), 'x', 0)",
        "INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name, published_at) "
        "VALUES (gen_random_uuid(), 'refresh_dashboards', 'dashboards.daily_revenue', now())",
        "INSERT INTO etl_audit.run_notices (flow_run_id, kind, sent_by, channels) "
        "VALUES (gen_random_uuid(), 'alert', 'run', '{}')",
        "INSERT INTO etl_audit.run_endings (flow_run_id, outcome) VALUES (gen_random_uuid(), 'completed')",
        "UPDATE etl_audit.refresh_runs SET status = 'running'",
    ]
    for forgery in forgeries:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(least_privilege.refresher_url, forgery)


def test_no_function_takes_the_time_of_a_record(demo_database):
    """Every time on record is the database's clock: no writing function takes one from its caller."""
    taking_times = query(
        demo_database,
        "SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc AS p "
        "WHERE p.pronamespace = 'etl_audit'::regnamespace AND p.prorettype <> 'trigger'::regtype "
        "AND 'timestamptz'::regtype = ANY (p.proargtypes)",
    )
    # record_sources takes the newest row's time of a source table: the data's, not the record's.
    assert [name for name, _ in taking_times] == ["record_sources"]


def test_a_run_is_written_only_by_its_own_session_while_it_is_connected(demo_database, least_privilege):
    refresher = least_privilege.refresher_url
    run = str(uuid.uuid4())
    with session(refresher, run) as own:
        own.execute("SELECT etl_audit.open_run(%s, 'nightly', NULL, '{refresh_dashboards}')", (run,))
        # Another session, under any name, may not write it while its own is connected: no notice
        # that would silence the worker's hook, no attempt, no ending.
        for name in (run, None):
            with session(refresher, name) as other:
                for forgery, params in (
                    ("SELECT etl_audit.record_notice(%s, 'alert', 'run', '{}')", (run,)),
                    ("SELECT etl_audit.open_attempt(%s, 'refresh_dashboards', 1, NULL)", (run,)),
                    (
                        "SELECT etl_audit.close_run(%s, 'x', NULL, '{}', 'completed', NULL, NULL, NULL, NULL)",
                        (run,),
                    ),
                ):
                    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                        other.execute(forgery, params)
        own.execute("SELECT etl_audit.open_attempt(%s, 'refresh_dashboards', 1, NULL)", (run,))
        (attempt,) = own.fetchone()
    # Its session gone (a crash), a session of the same run (the worker's hook) takes over and ends it.
    with session(refresher, run) as hook:
        hook.execute(
            "SELECT etl_audit.close_run(%s, 'nightly', NULL, '{}', 'crashed', 'refresh_dashboards', 1, NULL, NULL)",
            (run,),
        )
        assert hook.fetchone() == (True,)
    assert query(
        demo_database, "SELECT status FROM etl_audit.step_attempts WHERE attempt_id = %s", (attempt,)
    ) == [("crashed",)]


def test_a_closed_run_stays_as_it_ended_and_its_failure_stays_listed(demo_database, least_privilege):
    refresher = least_privilege.refresher_url
    failed, other = str(uuid.uuid4()), str(uuid.uuid4())
    with session(refresher, failed) as cursor:
        cursor.execute("SELECT etl_audit.open_run(%s, 'nightly', NULL, '{refresh_dashboards}')", (failed,))
        cursor.execute("SELECT etl_audit.open_attempt(%s, 'refresh_dashboards', 1, NULL)", (failed,))
        (attempt,) = cursor.fetchone()
        cursor.execute(
            "SELECT etl_audit.finish_attempt(%s, 'failed', 3, NULL, '23514', 'check x failed')", (attempt,)
        )
        cursor.execute(
            "SELECT etl_audit.close_run(%s, 'nightly', NULL, '{}', 'failed', 'refresh_dashboards', 1, '23514', "
            "'check x failed')",
            (failed,),
        )
        # Closed: a second ending is not taken, the attempt is not finished again.
        cursor.execute(
            "SELECT etl_audit.close_run(%s, 'nightly', NULL, '{}', 'completed', NULL, NULL, NULL, NULL)",
            (failed,),
        )
        assert cursor.fetchone() == (False,)
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute("SELECT etl_audit.finish_attempt(%s, 'completed', 3, 10, NULL, NULL)", (attempt,))
    # Rows of an open run may not be moved into, or filed under, a closed one.
    with session(refresher, other) as cursor:
        cursor.execute("SELECT etl_audit.open_run(%s, 'nightly', NULL, '{refresh_dashboards}')", (other,))
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute(
                "SELECT etl_audit.record_check(%s, %s, 'refresh_dashboards', 'c', 'f', 'error', 'passed', 0, 0, NULL)",
                (other, attempt),
            )
    # Executed again (Prefect's retry of the flow run), it is a new execution, and completes:
    with session(refresher, failed) as cursor:
        cursor.execute("SELECT etl_audit.open_run(%s, 'nightly', NULL, '{refresh_dashboards}')", (failed,))
        cursor.execute(
            "SELECT etl_audit.close_run(%s, 'nightly', NULL, '{}', 'completed', NULL, NULL, NULL, NULL)",
            (failed,),
        )
    # but the failure it had is on record where nobody may change it, and monitoring reads it there.
    endings = query(
        demo_database,
        "SELECT execution, outcome FROM etl_audit.run_endings WHERE flow_run_id = %s ORDER BY execution",
        (failed,),
    )
    assert endings == [(1, "failed"), (2, "completed")]
    listed = run_monitoring_query(target_from_url(refresher, "test"), "failed_runs")
    assert [(row["execution"], row["outcome"]) for row in listed if row["flow_run_id"] == failed] == [
        (1, "failed")
    ]


def test_no_owner_code_runs_from_the_refreshers_temporary_objects(
    demo_database, least_privilege, prefect, monkeypatch
):
    """A view whose function sets its own search_path (without pg_temp last) resolves names in the
    caller's temporary schema first; inside the owner's refresh, that code ran as the owner."""
    refresher = make_url(least_privilege.refresher_url).username
    owner = refresher.replace("_refresher_", "_owner_")
    execute(
        demo_database,
        sql.SQL(
            "CREATE TABLE staging.ward_names (ward text);"
            "CREATE FUNCTION staging.ward_count() RETURNS bigint LANGUAGE sql STABLE "
            "SET search_path = staging AS $$ SELECT count(*) FROM ward_names $$;"
            "CREATE MATERIALIZED VIEW analytics.mv_ward_count AS SELECT staging.ward_count() AS wards;"
            "ALTER MATERIALIZED VIEW analytics.mv_ward_count OWNER TO {owner};"
            "GRANT SELECT ON staging.ward_names TO {owner}; GRANT EXECUTE ON FUNCTION staging.ward_count() TO {owner}"
        ).format(owner=sql.Identifier(owner)),
    )
    attack = sql.SQL(
        "CREATE FUNCTION pg_temp.escalate() RETURNS bigint LANGUAGE plpgsql AS $$ BEGIN "
        "EXECUTE format('GRANT DELETE ON etl_audit.refresh_runs TO %I', session_user); RETURN 0; END $$;"
        "CREATE TEMP VIEW ward_names AS SELECT pg_temp.escalate()::text AS ward;"
        "SELECT etl_audit.refresh_materialized_view('analytics.mv_ward_count', false)"
    )
    with pytest.raises(psycopg2.errors.InsufficientPrivilege, match="temporary object"):
        execute(least_privilege.refresher_url, attack)
    assert not scalar(
        demo_database, "SELECT has_table_privilege(%s, 'etl_audit.refresh_runs', 'DELETE')", (refresher,)
    ), "the owner granted nothing"
    # A temporary table named apart from everything else (as the shrink guard's) shadows nothing.
    execute(
        least_privilege.refresher_url,
        "CREATE TEMP TABLE tonight_only (n int);"
        "SELECT etl_audit.refresh_materialized_view('analytics.mv_ward_count', false)",
    )
    # And the refresher still refreshes, twice.
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
    for _ in range(2):
        state = run_flow()
        assert state.is_completed(), error_text(state)


def test_a_least_privilege_install_of_1_3_0_keeps_every_record_and_loses_its_write_grants(
    demo_database, least_privilege, prefect, monkeypatch
):
    refresher = make_url(least_privilege.refresher_url).username
    owner, reader = refresher.replace("_refresher_", "_owner_"), make_url(least_privilege.reader_url).username
    # As 1.3.0 left it: its etl_audit, with history, the refresher granted INSERT and UPDATE on it.
    install_released_audit(demo_database, "etl_audit_1_3_0.sql", owner, refresher)
    failed, completed = str(uuid.uuid4()), str(uuid.uuid4())
    execute(
        demo_database,
        "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, steps, started_at, finished_at, status, "
        "outcome, failed_step, attempts, sqlstate, error) VALUES "
        "(%s, 'old-failed', '{refresh_dashboards}', now() - interval '2 days', now() - interval '2 days', 'failed',"
        " 'check_failed', 'refresh_dashboards', 1, NULL, 'check x failed'),"
        "(%s, 'old-completed', '{refresh_dashboards}', now() - interval '1 day', now() - interval '1 day',"
        " 'completed', 'completed', NULL, NULL, NULL, NULL);"
        "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, status) VALUES "
        "(%s, 'refresh_dashboards', 1, 'failed'), (%s, 'refresh_dashboards', 1, 'completed');"
        "INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count) VALUES (%s, 'staging.visits', 10);"
        "INSERT INTO etl_audit.run_notices (flow_run_id, kind, sent_by, channels) VALUES (%s, 'alert', 'run', '{email}');"
        "INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES ('{refresh_dashboards}')",
        (failed, completed, failed, completed, completed, failed),
    )
    counts = {
        table: scalar(demo_database, f"SELECT count(*) FROM etl_audit.{table}") for table in AUDIT_TABLES[:-1]
    }

    create_roles(demo_database, owner, refresher, reader)

    assert {
        table: scalar(demo_database, f"SELECT count(*) FROM etl_audit.{table}") for table in counts
    } == counts
    assert query(
        demo_database, "SELECT flow_run_id::text, outcome FROM etl_audit.run_endings ORDER BY finished_at"
    ) == [(failed, "check_failed"), (completed, "completed")], (
        "every earlier ending, on record where monitoring reads"
    )
    writable = query(
        demo_database,
        "SELECT c.relname, p FROM pg_class AS c, unnest(ARRAY['INSERT', 'UPDATE', 'DELETE']) AS p "
        "WHERE c.relnamespace = 'etl_audit'::regnamespace AND c.relkind = 'r' AND has_table_privilege(%s, c.oid, p)",
        (refresher,),
    )
    assert writable == [("refresh_lock", "UPDATE")], "the only write grant left: the lock it takes"
    monkeypatch.setenv("HOSPITALDB_DATABASE_URL", least_privilege.refresher_url)
    for _ in range(2):
        state = run_flow()
        assert state.is_completed(), error_text(state)
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs WHERE outcome = 'completed'") == 3
    )


def test_the_reader_reads_data_status_and_a_role_with_no_grants_nothing(demo_database, least_privilege):
    reader = least_privilege.reader_url
    assert query(reader, "SELECT count(*) FROM etl_audit.data_status")
    nobody = f"hdb_nobody_{uuid.uuid4().hex[:8]}"
    execute(demo_database, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(nobody)))
    try:
        no_grants = str(make_url(reader).set(username=nobody))
        for url in (reader, no_grants):
            for statement in (
                "SELECT count(*) FROM etl_audit.refresh_runs",
                "SELECT count(*) FROM reporting.patient_summary",
                "SELECT etl_audit.record_freshness_alert('{}')",
                "SELECT etl_audit.refresh_materialized_view('analytics.mv_patient_summary', true)",
                "BEGIN; LOCK TABLE etl_audit.refresh_lock IN SHARE ROW EXCLUSIVE MODE; ROLLBACK",
            ):
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    execute(url, statement)
    finally:
        execute(demo_database, sql.SQL("DROP ROLE {}").format(sql.Identifier(nobody)))
