"""The cutover of docs/from-airflow.md, run word for word: every command of its stages but the
`airflow` lines, in page order, through bash, against a real Prefect server (its scheduler on) and
the worker the page starts, on a copy of the demo HospitalDB, as the least-privilege refresher
whose password is in a pgpass file; the page's psql query runs as the read-only role.

Between the commands, what the page says each one does: deployed with every schedule paused, no
run comes from a schedule; the morning's dry run completes and changes nothing; resumed, the
schedules are active; the real refresh publishes what the sources hold; the reader sees every
object published; rolled back, the nightly is paused again. Then the case Airflow queued: the
nightly meeting a running on-demand refresh waits for it, then runs.
"""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy.engine import make_url

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import add_source_rows, checksums, scalar
from hospitaldb_testing.deployment import (
    client_of,
    deploy_environment,
    runs_from_schedules,
    start_run,
    wait_for_final_state,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.pages import commands_of, shell_blocks, shell_session
from hospitaldb_testing.prefect_servers import prefect_server
from hospitaldb_testing.runs import TableLock, wait_for_blocked_refresh

PAGE = PROJECT_ROOT / "docs" / "from-airflow.md"
SCHEDULED = ("hospitaldb-refresh/nightly", "hospitaldb-freshness-check/freshness-check")


def cutover_commands() -> list[tuple[str, str]]:
    """(stage, command) for each line of the cutover's shell blocks, in page order, comments dropped."""
    cutover = PAGE.read_text(encoding="utf-8").split("## The cutover", 1)[1]
    return [
        (stage.splitlines()[0], command)
        for stage in re.split(r"^### ", cutover, flags=re.M)[1:]
        for block in shell_blocks(stage)
        for command in commands_of(block)
    ]


def test_the_cutover_has_its_stages_and_pauses_with_commands_prefect_has():
    commands = [command for _, command in cutover_commands()]
    assert commands[:3] == ["hospitaldb validate", "hospitaldb refresh --dry-run", "hospitaldb lineage"]
    assert "bash deployments/deploy.sh --paused" in commands
    assert (
        "hospitaldb schedule resume 'hospitaldb-refresh/nightly' 'hospitaldb-freshness-check/freshness-check'"
        in commands
    )
    assert commands[-2:] == [
        "hospitaldb schedule pause 'hospitaldb-refresh/nightly'",
        "airflow dags unpause hospitaldb_full_refresh",
    ]


def schedules_active(env: dict[str, str]) -> dict[str, bool]:
    with client_of(env) as client:
        return {
            name: all(schedule.active for schedule in client.read_deployment_by_name(name).schedules)
            for name in SCHEDULED
        }


def reader_environment(env: dict[str, str], reader_url: str) -> dict[str, str]:
    """libpq's variables for the reader: the page's psql line names no database itself."""
    url = make_url(reader_url)
    host = url.host or url.query.get("host")
    return {
        **env,
        "PGHOST": host if isinstance(host, str) else host[0],
        "PGPORT": str(url.port or url.query.get("port") or 5432),
        "PGUSER": url.username,
        "PGDATABASE": url.database,
    }


@pytest.mark.e2e
def test_the_cutover_runs_word_for_word_on_a_real_server_and_worker(
    demo_database, least_privilege, tmp_path, smtp_server, webhook_server, monkeypatch
):
    # The server's scheduler looks every 5 s (not 60): a paused schedule has had its chances to
    # make a run by the morning's dry run.
    monkeypatch.setenv("PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "5")
    refresher = make_url(least_privilege.refresher_url)
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"*:*:*:{refresher.username}:{least_privilege.password}\n")
    pgpass.chmod(0o600)
    without_password = refresher.set(password=None).render_as_string(hide_password=False)
    before = checksums(demo_database)
    add_source_rows(demo_database)  # the day's new data, which Airflow would publish tonight
    skipped = []
    with prefect_server(tmp_path / "prefect-home") as server_env:  # its scheduler on, as in production
        env = {
            **deploy_environment(server_env, without_password, smtp_server, webhook_server),
            "PGPASSFILE": str(pgpass),
        }
        reader_env = reader_environment(env, least_privilege.reader_url)
        with shell_session(env, tmp_path) as shell:
            for _, command in cutover_commands():
                if command.startswith("airflow "):
                    skipped.append(command)
                    continue
                output = shell.run(command, env=reader_env if command.startswith("psql") else None)
                what_it_did(command, output, env, demo_database, before)

            assert skipped == [
                "airflow dags pause hospitaldb_full_refresh",
                "airflow dags unpause hospitaldb_full_refresh",
            ]
            assert schedules_active(env) == {SCHEDULED[0]: False, SCHEDULED[1]: True}  # rolled back
            the_nightly_waits_for_an_on_demand_refresh(env, demo_database)


def what_it_did(command: str, output: str, env: dict[str, str], database: str, before: dict) -> None:
    if command == "bash deployments/deploy.sh --paused":
        assert schedules_active(env) == dict.fromkeys(SCHEDULED, False)
    elif "--param dry_run=true" in command:
        assert "Completed" in output
        assert checksums(database) == before, "the dry run changed data"
        assert scalar(database, "SELECT count(*) FROM etl_audit.refresh_runs") == 0, "a dry run is on record"
        assert runs_from_schedules(env) == [], "a paused schedule made a run"
    elif command.startswith("hospitaldb schedule resume"):
        assert schedules_active(env) == dict.fromkeys(SCHEDULED, True), output
        # The scheduler makes runs of them now: it was on, and made none while they were paused.
        wait_for(
            lambda: set(deployments_scheduled(env)) >= {"nightly", "freshness-check"},
            "runs from the schedules",
        )
    elif command == "prefect deployment run 'hospitaldb-refresh/on-demand' --watch":
        assert "Completed" in output
        assert_matches_source(database)
    elif command.startswith("psql"):
        rows = [
            line
            for line in output.splitlines()
            if line.strip().startswith(("analytics.", "reporting.", "dashboards."))
        ]
        assert len(rows) == 10, output
        assert all(line.rstrip().endswith("| f") for line in rows), output  # none stale


def the_nightly_waits_for_an_on_demand_refresh(env: dict[str, str], database: str) -> None:
    """Airflow queued a DAG run behind a running one; the nightly waits for the refresh lock."""
    blocker = TableLock(database, "reporting.patient_summary")
    try:
        on_demand = start_run(env, "hospitaldb-refresh/on-demand")
        wait_for_blocked_refresh(database, timeout=180)
        nightly = start_run(env, "hospitaldb-refresh/nightly")
        deadline = time.monotonic() + 180
        while not scalar(
            database,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            'AND query LIKE \'LOCK TABLE "etl_audit"."refresh_lock"%%\'',
        ):
            assert time.monotonic() < deadline, "the nightly never waited for the refresh lock"
            time.sleep(0.5)
    finally:
        blocker.release()
    assert wait_for_final_state(env, on_demand, timeout=300).is_completed()
    assert wait_for_final_state(env, nightly, timeout=300).is_completed(), (
        "the nightly did not run after the wait"
    )


def deployments_scheduled(env: dict[str, str]) -> list[str]:
    """The names of the deployments the scheduler has made runs of."""
    with client_of(env) as client:
        names = {deployment.id: deployment.name for deployment in client.read_deployments()}
        return [
            names.get(run.deployment_id, "") for run in client.read_flow_runs(limit=200) if run.auto_scheduled
        ]


def wait_for(condition, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:g} s for {what}"
        time.sleep(1)
