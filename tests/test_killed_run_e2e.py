"""A run killed for real, on the deployment path: its process alone (the worker reports it), or its
process and worker together (the server's automation notices the missing heartbeats).

Against a server with the auth string, as the least-privilege role, like test_deployment_e2e.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from prefect.client.schemas.objects import StateType

from hospitaldb_testing.db import advisory_locks_held, scalar
from hospitaldb_testing.deployment import (
    AUTH_STRING,
    deployed_environment,
    flow_run_state,
    start_run,
    wait_for_final_state,
)
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.prefect_servers import prefect_cli, prefect_server, prefect_worker
from hospitaldb_testing.runs import TableLock, wait_for_blocked_refresh

pytestmark = pytest.mark.e2e


def flow_run_processes(worker: subprocess.Popen, flow_run_id: str) -> list:
    """The processes the worker started for one flow run."""
    import psutil

    found = []
    for child in psutil.Process(worker.pid).children(recursive=True):
        try:
            if child.environ().get("PREFECT__FLOW_RUN_ID") == flow_run_id:
                found.append(child)
        except psutil.Error:
            continue
    return found


def kill_while_blocked(database_url: str, env: dict[str, str], kill) -> tuple[str, int]:
    """Start an on-demand run, let step 2 wait on a held lock, then kill; return (run, backend pid)."""
    blocker = TableLock(database_url, "reporting.patient_summary")
    try:
        flow_run_id = start_run(env, "hospitaldb-refresh/on-demand")
        statement = wait_for_blocked_refresh(database_url, timeout=120)
        kill(flow_run_id)
        final = wait_for_final_state(env, flow_run_id, timeout=300)
    finally:
        blocker.release()
    assert final.type == StateType.CRASHED, final
    return flow_run_id, statement


def run_status(database_url: str, flow_run_id: str) -> str | None:
    return scalar(
        database_url, "SELECT status FROM etl_audit.refresh_runs WHERE flow_run_id = %s", (flow_run_id,)
    )


def backend_alive(database_url: str, pid: int) -> bool:
    return scalar(database_url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) == 1


def test_a_killed_run_is_marked_crashed_and_reported_even_when_its_worker_dies_too(
    demo_database, least_privilege, tmp_path, smtp_server, webhook_server
):
    with prefect_server(tmp_path / "prefect-home", auth_string=AUTH_STRING, schedules=False) as server_env:
        env = deployed_environment(server_env, least_privilege.refresher_url, smtp_server, webhook_server)
        worker_log = tmp_path / "worker.log"
        with prefect_worker(env, "hospitaldb-pool", worker_log) as worker:
            # The run's process alone is killed (the OOM killer's usual pick): the worker
            # sees it exit, marks it Crashed and runs its crash hooks.
            def kill_run_process(flow_run_id: str) -> None:
                (process,) = flow_run_processes(worker, flow_run_id)
                process.kill()

            alone, alone_statement = kill_while_blocked(demo_database, env, kill_run_process)
            notice_deadline = time.monotonic() + 60
            while len(webhook_server.posts) < 1 or len(smtp_server.received) < 1:
                assert time.monotonic() < notice_deadline, worker_log.read_text()[-3000:]
                time.sleep(0.5)
            (mail,) = smtp_server.received
            assert (
                mail.message["Subject"] == "[HospitalDB] Refresh CRASHED at refresh_phase3_reporting_tables"
            )
            # The crash hook alerts first and writes the record after (SIGKILL may follow a crash
            # within 30 s): the record can land a moment after the notices.
            record_deadline = time.monotonic() + 30
            while run_status(demo_database, alone) != "crashed":
                assert time.monotonic() < record_deadline, run_status(demo_database, alone)
                time.sleep(0.5)

            # Worker and run killed together (node lost, the container OOM-killed): nothing
            # is left to report. The server's automation notices the missing heartbeats.
            def kill_worker_and_run(flow_run_id: str) -> None:
                (process,) = flow_run_processes(worker, flow_run_id)
                os.killpg(worker.pid, signal.SIGKILL)
                process.kill()

            together, together_statement = kill_while_blocked(demo_database, env, kill_worker_and_run)
        state = flow_run_state(env, together)
        assert "No heartbeat for 90 s" in state.message
        notice_deadline = time.monotonic() + 60
        while len(webhook_server.posts) < 2:
            assert time.monotonic() < notice_deadline, "the automation posted no notice"
            time.sleep(0.5)
        notice = webhook_server.texts()[1]
        assert "CRASHED: its process stopped answering" in notice and together in notice, notice
        assert len(smtp_server.received) == 1, "the server cannot email: Slack only"
        # The killed clients' statements did not run on: their backends noticed the clients gone.
        assert not backend_alive(demo_database, alone_statement)
        assert not backend_alive(demo_database, together_statement)
        assert advisory_locks_held(demo_database) == 0

        # The crashed run held the on-demand deployment's concurrency slot and left 'running'
        # audit rows: the next request is not queued behind it, and marks those rows abandoned.
        with prefect_worker(env, "hospitaldb-pool", tmp_path / "worker-2.log"):
            watched = prefect_cli(
                env, "deployment", "run", "hospitaldb-refresh/on-demand", "--watch", "--watch-timeout", "240"
            )
        assert watched.returncode == 0 and "Completed" in watched.stdout, watched.stdout + watched.stderr
        assert run_status(demo_database, together) == "abandoned"
        assert_matches_source(demo_database)
