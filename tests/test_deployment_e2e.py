"""The deployment path for real: prefect server, deploy.sh, a process worker, `prefect deployment run`.

The server asks for credentials (PREFECT_SERVER_API_AUTH_STRING) and the refresh logs in as
the least-privilege role of deployments/create_roles.py, never as a superuser. Runs once with
the server on SQLite and, when a PostgreSQL server answers over TCP (tcp_postgres_admin_url), once with the
Prefect server itself on PostgreSQL (asyncpg).
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg2
import pytest
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from psycopg2 import sql
from sqlalchemy.engine import make_url

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.record.monitoring import monitoring_queries, run_monitoring_query
from hospitaldb_testing.db import (
    add_source_rows,
    advisory_locks_held,
    execute,
    execute_outside_transaction,
    query,
    scalar,
)
from hospitaldb_testing.deployment import (
    AUTH_STRING,
    anonymous_block_listing,
    client_of,
    deployed_environment,
    runs_from_schedules,
    start_run,
    wait_for_final_state,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.prefect_servers import prefect_cli, prefect_server, prefect_worker
from hospitaldb_testing.runs import TableLock, wait_for_blocked_refresh

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
def prefect_database(request) -> str | None:
    """Where the Prefect server keeps its own state: SQLite, or a PostgreSQL server over TCP."""
    if request.param == "sqlite":
        yield None
        return
    admin_url = request.getfixturevalue("tcp_postgres_admin_url")
    name = f"prefect_e2e_{uuid.uuid4().hex[:8]}"
    execute_outside_transaction(admin_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )
    execute_outside_transaction(
        admin_url, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    )


OVERPAYMENT = (
    "UPDATE staging.payments SET amount = amount + 100000 "
    "WHERE payment_id = (SELECT min(payment_id) FROM staging.payments)"
)


def test_deploy_run_collide_and_cancel_through_a_real_server_and_worker(
    demo_database, least_privilege, prefect_database, tmp_path, smtp_server, webhook_server
):
    with prefect_server(
        tmp_path / "prefect-home", prefect_database, auth_string=AUTH_STRING, schedules=False
    ) as server_env:
        env = deployed_environment(
            server_env,
            least_privilege.refresher_url,
            smtp_server,
            webhook_server,
            again=prefect_database is None,
        )
        status, body = anonymous_block_listing(env["PREFECT_API_URL"])
        assert status == 401, body
        assert least_privilege.password not in body and "XoXoSECRETtoken" not in body
        with client_of(env) as client:
            nightly = client.read_deployment_by_name("hospitaldb-refresh/nightly")
        schedule = nightly.schedules[0].schedule
        assert (schedule.cron, schedule.timezone) == ("0 2 * * *", "UTC")
        assert nightly.global_concurrency_limit.limit == 1
        assert nightly.concurrency_options.collision_strategy.value == "CANCEL_NEW"
        assert nightly.work_pool_name == "hospitaldb-pool"

        add_source_rows(demo_database)
        with prefect_worker(env, "hospitaldb-pool", tmp_path / "worker.log"):
            watched = prefect_cli(
                env, "deployment", "run", "hospitaldb-refresh/nightly", "--watch", "--watch-timeout", "240"
            )
            assert watched.returncode == 0, (
                watched.stdout + watched.stderr + (tmp_path / "worker.log").read_text()[-3000:]
            )
            assert "Completed" in watched.stdout
            assert_matches_source(demo_database)
            assert (
                scalar(
                    demo_database,
                    "SELECT visit_count FROM reporting.patient_summary WHERE patient_id = 900001",
                )
                == 1
            )

            # A second nightly run while one runs: CANCEL_NEW cancels it.
            blocker = TableLock(demo_database, "reporting.patient_summary")
            try:
                first = start_run(env, "hospitaldb-refresh/nightly")
                wait_for_blocked_refresh(demo_database, timeout=120)
                second = start_run(env, "hospitaldb-refresh/nightly")
                second_state = wait_for_final_state(env, second)
            finally:
                blocker.release()
            first_state = wait_for_final_state(env, first)

            # Cancel from the CLI while step 2 waits on a held lock: Cancelled, rolled back,
            # the lock free, the audit trail and the artifact say cancelled, one notice.
            assert smtp_server.received == [] and webhook_server.posts == []
            blocker = TableLock(demo_database, "reporting.patient_summary")
            try:
                third = start_run(env, "hospitaldb-refresh/on-demand")
                statement = wait_for_blocked_refresh(demo_database, timeout=120)
                cancel = prefect_cli(env, "flow-run", "cancel", third)
                assert cancel.returncode == 0, cancel.stdout + cancel.stderr
                third_state = wait_for_final_state(env, third)
                running = scalar(
                    demo_database, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (statement,)
                )
            finally:
                blocker.release()
            notice_deadline = time.monotonic() + 60
            while len(webhook_server.posts) < 1 or len(smtp_server.received) < 1:
                assert time.monotonic() < notice_deadline, (tmp_path / "worker.log").read_text()[-3000:]
                time.sleep(0.5)
            (mail,), slack_posts = smtp_server.received, len(webhook_server.posts)

            # Still as the least-privilege role: a run a data check refuses, then the freshness check.
            execute(demo_database, OVERPAYMENT)
            refused = prefect_cli(
                env, "deployment", "run", "hospitaldb-refresh/on-demand", "--watch", "--watch-timeout", "240"
            )
            assert refused.returncode == 1 and "Failed" in refused.stdout, refused.stdout + refused.stderr
            fresh = prefect_cli(
                env,
                "deployment",
                "run",
                "hospitaldb-freshness-check/freshness-check",
                "--watch",
                "--watch-timeout",
                "240",
            )
            assert fresh.returncode == 0, (
                fresh.stdout + fresh.stderr + (tmp_path / "worker.log").read_text()[-3000:]
            )
            # The schedules are deployed but never fire here: a scheduled freshness check at
            # minute 15 once sent its own alert in the middle of this test.
            assert runs_from_schedules(env) == []
        assert third_state.type == StateType.CANCELLED, third_state
        assert running == 0, "the blocked statement's session was ended with the run"
        assert advisory_locks_held(demo_database) == 0
        assert (
            scalar(
                demo_database, "SELECT status FROM etl_audit.refresh_runs WHERE flow_run_id = %s", (third,)
            )
            == "cancelled"
        )
        assert (
            scalar(
                demo_database,
                "SELECT status FROM etl_audit.step_attempts WHERE flow_run_id = %s AND step = %s",
                (third, "refresh_phase3_reporting_tables"),
            )
            == "cancelled"
        )
        with client_of(env) as client:
            (summary,) = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["hospitaldb-refresh-summary"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[third])),
            )
            (steps,) = client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["hospitaldb-refresh-steps"])),
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[third])),
            )
        assert summary.data.startswith("# HospitalDB refresh cancelled"), summary.data
        assert [(row["step"], row["status"]) for row in json.loads(steps.data)] == [
            ("refresh_phase2_materialized_views", "completed"),
            ("refresh_phase3_reporting_tables", "cancelled"),
            ("refresh_dashboards", "not run"),
        ]
        # Every monitoring query answers the refresher; failed_runs has the cancel and the refusal.
        refresher = target_from_url(least_privilege.refresher_url, "refresher")
        answers = {name: run_monitoring_query(refresher, name) for name in monitoring_queries()}
        failed = {row["flow_run_id"]: row for row in answers["failed_runs"]}
        assert (failed[third]["outcome"], failed[third]["failed_at"]) == (
            "cancelled",
            "refresh_phase3_reporting_tables",
        )
        (refusal,) = [row for row in failed.values() if row["outcome"] == "check_failed"]
        assert "no_negative_outstanding" in refusal["failed_checks"]
        assert {
            row["step"] for row in answers["last_successful_refresh"] if row["hours_ago"] is not None
        } == {
            "refresh_phase2_materialized_views",
            "refresh_phase3_reporting_tables",
            "refresh_dashboards",
        }
        # The reader sees data_status and nothing else; the refresher reads only what it was granted
        # and cannot redefine data_status.
        checks = dict(
            query(least_privilege.reader_url, "SELECT step, last_run_checks FROM etl_audit.data_status")
        )
        assert checks["refresh_phase3_reporting_tables"] == "failed"
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(least_privilege.reader_url, "SELECT * FROM etl_audit.refresh_runs")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            query(least_privilege.refresher_url, "SELECT * FROM staging.patient_contacts")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            execute(
                least_privilege.refresher_url, "CREATE OR REPLACE VIEW etl_audit.data_status AS SELECT 1 AS x"
            )
        assert mail.message["Subject"] == "[HospitalDB] Refresh CANCELLED at refresh_phase3_reporting_tables"
        assert "rolled back" in mail.text
        assert slack_posts == 1
        assert "check no_negative_outstanding failed" in smtp_server.received[1].message["Subject"]
        assert second_state.type == StateType.CANCELLED, second_state
        assert first_state.type == StateType.COMPLETED, first_state
