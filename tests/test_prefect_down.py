"""When the Prefect server itself is down: a failed refresh still alerts, at once and once, and the record heals.

A real `prefect server` on loopback, stopped while a refresh waits at the start of a step (or of
its source checks) and started again (same home, same port) after the run failed in the outage.
The run's process is `hospitaldb_refresh(...)` with PREFECT_API_URL set, as `python
flows/refresh.py` runs it; its alert blocks live on that server; the alerts go to a real SMTP
server and webhook on loopback.

Two outages: one shorter than the Prefect client's retries (the run waits, then sets its own
final state), and one that outlasts them (the process gives up and exits, and Prefect shows the
run Running until something heals it). The second is made in seconds by giving the run's
client no retries (PREFECT_CLIENT_MAX_RETRIES=0): what matters is that the client gave up, not
how long that took. HOSPITALDB_TEST_LONG_OUTAGE_SECONDS=480 makes it a real 8-minute outage
with Prefect's default retries instead.

One more outage begins as the failure is told (the Slack receiver answers only once the server
is down), before the run writes its record, publishes its artifacts and reports its final state.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_slack import SlackWebhook

from hospitaldb import settings
from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import add_source_rows, execute, query, scalar
from hospitaldb_testing.deployment import client_of
from hospitaldb_testing.prefect_servers import free_port, prefect_server
from hospitaldb_testing.receivers import SmtpServer, WebhookServer, save_email_block
from hospitaldb_testing.runs import TableLock, wait_for_blocked_refresh

pytestmark = pytest.mark.e2e

NEGATIVE_PAYMENT = "INSERT INTO staging.payments VALUES (999999991, 90000011, -1000000, '2026-07-09', 'cash')"
LONG_OUTAGE_SECONDS = float(settings.TEST_LONG_OUTAGE_SECONDS.read() or 0)


class RestartableServer:
    """A Prefect server that can be stopped and started again with what it held."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self._running: contextlib.ExitStack | None = None
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self._running = contextlib.ExitStack()
        self.env = self._running.enter_context(prefect_server(self.home, port=self.port, schedules=False))

    def stop(self) -> None:
        if self._running:
            self._running.close()
            self._running = None


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(tmp_path / "prefect")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def receivers() -> Iterator[tuple[SmtpServer, WebhookServer]]:
    smtp, webhook = SmtpServer().start(), WebhookServer()
    yield smtp, webhook
    smtp.stop()
    webhook.shutdown()
    webhook.server_close()


def alert_parameters(server: RestartableServer, smtp: SmtpServer, webhook: WebhookServer) -> str:
    """Email and Slack blocks on the server, pointing at the loopback receivers: the run's arguments."""
    suffix = uuid.uuid4().hex[:8]
    with temporary_settings({PREFECT_API_URL: server.env["PREFECT_API_URL"]}):
        save_email_block(f"email-{suffix}", smtp.port)
        SlackWebhook(url=webhook.url).save(f"slack-{suffix}")
    return (
        f"email_block='email-{suffix}', slack_block='slack-{suffix}', alert_emails=['oncall@hospital.example'], "
        "retries=0, lock_timeout_seconds=600"
    )


def refresh_process(server: RestartableServer, database_url: str, arguments: str, env: dict[str, str]):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hospitaldb.refresh import hospitaldb_refresh; hospitaldb_refresh({arguments})",
        ],
        cwd=PROJECT_ROOT,
        env={**server.env, DATABASE_URL_ENV: database_url, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.2)


def outcome_of(database_url: str) -> str | None:
    return scalar(database_url, "SELECT outcome FROM etl_audit.refresh_runs")


def the_run(database_url: str) -> str:
    return str(scalar(database_url, "SELECT flow_run_id FROM etl_audit.refresh_runs"))


def prefect_view(server: RestartableServer, flow_run_id: str) -> tuple[Any, dict[str, Any], set[str]]:
    """The run's state, its task runs' states by task, and its artifacts' keys, as the Prefect server shows them."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    with client_of(server.env) as prefect:
        state = prefect.read_flow_run(flow_run_id).state
        tasks = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        artifacts = prefect.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    tasks_by_name = {task.name.rsplit("-", 1)[0]: task.state for task in tasks}
    return state, tasks_by_name, {artifact.key for artifact in artifacts}


def prefect_logs(server: RestartableServer, flow_run_id: str) -> list[tuple[Any, str]]:
    """The run's log lines as Prefect has them: (timestamp, message)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with client_of(server.env) as prefect:
        logs = prefect.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [(log.timestamp, log.message) for log in logs]


# Prefect's engine logs these before the flow's body, where the run starts keeping its lines,
# and the last after it: not the run's to resend.
ENGINE_LINES = ("Beginning flow run", "View at ", "Finished in state")


def run_lines(output: str) -> list[str]:
    """The first line of each message the run printed as its flow run's logger ('... | Flow run 'x' - MESSAGE')."""
    return [
        message
        for line in output.splitlines()
        if " | Flow run '" in line and " - " in line
        for message in [line.split(" - ", 1)[1]]
        if not message.startswith(ENGINE_LINES)
    ]


def assert_healed(server: RestartableServer, database_url: str, flow_run_id: str, final: str) -> None:
    """Prefect shows the run's recorded ending, a final task run for every task it recorded, and its artifacts."""
    state, task_states, artifacts = prefect_view(server, flow_run_id)
    assert state.type.value == final, state
    recorded = {
        step
        for (step,) in query(
            database_url,
            "SELECT DISTINCT step FROM etl_audit.step_attempts WHERE flow_run_id = %s AND step <> 'refresh_lock'",
            (flow_run_id,),
        )
    }
    assert set(task_states) >= recorded, f"Prefect never heard of {recorded - set(task_states)}"
    assert all(task.is_final() for task in task_states.values()), task_states
    assert {"hospitaldb-refresh-steps", "hospitaldb-refresh-summary"} <= artifacts


# Where the run waits as the server stops: the lock it waits for, and the session that waits.
AT_STEP_2 = ("reporting.patient_summary", "SHARE", "hospitaldb-refresh")
AT_THE_SOURCE_CHECKS = ("staging.payments", "ACCESS EXCLUSIVE", "hospitaldb-refresh-sources")

# (how long the client retries, how long the run waits for the API, when the server is back, where it stopped)
OUTAGES = {
    "shorter than the client's retries": ({}, "back while the run waits", AT_STEP_2),
    "outlasting the client's retries, back while the run waits": (
        {"PREFECT_CLIENT_MAX_RETRIES": "0", "HOSPITALDB_API_WAIT_SECONDS": "300"},
        "back while the run waits",
        AT_STEP_2,
    ),
    "from the source checks, outlasting the client's retries and the run's wait": (
        {"PREFECT_CLIENT_MAX_RETRIES": "0", "HOSPITALDB_API_WAIT_SECONDS": "0"},
        "back after the run gave up",
        AT_THE_SOURCE_CHECKS,
    ),
}


@pytest.mark.parametrize("outage", list(OUTAGES))
def test_a_failure_while_prefect_is_down_alerts_at_once_and_once_and_the_record_heals(
    demo_database, server, receivers, outage
):
    smtp, webhook = receivers
    arguments = alert_parameters(server, smtp, webhook)
    add_source_rows(demo_database)
    execute(demo_database, NEGATIVE_PAYMENT)  # a constraint of step 2 refuses this
    client, back, (table, mode, waiting) = OUTAGES[outage]
    if LONG_OUTAGE_SECONDS and client:
        client = {}  # a real long outage, Prefect's own retries

    blocker = TableLock(demo_database, table, mode)
    try:
        run = refresh_process(server, demo_database, arguments, client)
        wait_for_blocked_refresh(demo_database, timeout=120, application=waiting, process=run)
        server.stop()
    finally:
        blocker.release()  # the run goes on, with no Prefect server, and fails at step 2

    # Told from the run's own process, while the server is still down; on record in etl_audit.
    wait_until(lambda: smtp.received and webhook.posts, 60, "the alert while Prefect is down")
    flow_run_id = the_run(demo_database)
    assert "FAILED at refresh_phase3_reporting_tables" in smtp.received[0].message["Subject"]
    # The run tells its end before it writes its record (the database may be what failed).
    wait_until(lambda: outcome_of(demo_database) == "failed", 60, "the failed run on record")
    assert scalar(demo_database, "SELECT sent_by FROM etl_audit.run_notices WHERE kind = 'alert'") == "run"

    if back == "back after the run gave up":
        output, _ = run.communicate(timeout=900)
        assert run.returncode != 0, output
        server.start()
        state, _, _ = prefect_view(server, flow_run_id)
        assert state.is_running(), "the fault: Prefect never heard how the run ended"
        # The next run (the data mended) sets it from etl_audit, and tells of the recovery.
        execute(demo_database, "DELETE FROM staging.payments WHERE payment_id = 999999991")
        healer = refresh_process(server, demo_database, arguments, {})
        output, _ = healer.communicate(timeout=600)
        assert healer.returncode == 0, output
        assert len(webhook.posts) == 2 and len(smtp.received) == 2, "the alert, then the recovery notice"
        assert smtp.received[1].message["Subject"] == "[HospitalDB] Refresh recovered"
    else:
        time.sleep(LONG_OUTAGE_SECONDS or 25)  # with the restart, about 30 s down
        server.start()
        output, _ = run.communicate(timeout=900)
        assert run.returncode != 0, output
        assert len(smtp.received) == 1 and len(webhook.posts) == 1, "one alert per channel, never two"
        # What the run logged, in the outage too, is in Prefect, once.
        in_prefect = prefect_logs(server, flow_run_id)
        missing = [line for line in run_lines(output) if not any(m.startswith(line) for _, m in in_prefect)]
        assert not missing, missing
        assert len(in_prefect) == len(set(in_prefect)), "no line twice"
    assert_healed(server, demo_database, flow_run_id, "FAILED")


def test_an_outage_beginning_as_the_failure_is_told_still_ends_in_one_alert_and_a_healed_record(
    demo_database, server, receivers
):
    # The Slack receiver holds its answer until the server is down: the outage begins at the
    # failure's telling, before the run's record, artifacts and final state.
    smtp, webhook = receivers
    webhook.answer = threading.Event()
    arguments = alert_parameters(server, smtp, webhook)
    add_source_rows(demo_database)
    execute(demo_database, NEGATIVE_PAYMENT)
    run = refresh_process(server, demo_database, arguments, {})
    try:
        wait_until(lambda: webhook.posts, 300, "the Slack alert")
        server.stop()
    finally:
        webhook.answer.set()
    wait_until(lambda: smtp.received, 60, "the email alert while Prefect is down")
    flow_run_id = the_run(demo_database)
    time.sleep(25)  # with the restart, about 30 s down
    server.start()
    output, _ = run.communicate(timeout=900)
    assert run.returncode != 0, output
    assert scalar(demo_database, "SELECT outcome FROM etl_audit.refresh_runs") == "failed", output
    assert scalar(demo_database, "SELECT sent_by FROM etl_audit.run_notices WHERE kind = 'alert'") == "run"
    assert len(smtp.received) == 1 and len(webhook.posts) == 1, "one alert per channel, never two"
    assert_healed(server, demo_database, flow_run_id, "FAILED")


def freshness_process(server: RestartableServer, database_url: str, arguments: str):
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from hospitaldb.freshness import hospitaldb_freshness_check; hospitaldb_freshness_check({arguments})",
        ],
        cwd=PROJECT_ROOT,
        env={**server.env, DATABASE_URL_ENV: database_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_run_that_completes_while_prefect_is_down_is_set_completed_by_the_freshness_check(
    demo_database, server, receivers
):
    smtp, webhook = receivers
    arguments = alert_parameters(server, smtp, webhook)
    blocker = TableLock(demo_database, "reporting.patient_summary")
    try:
        run = refresh_process(
            server,
            demo_database,
            arguments,
            {"PREFECT_CLIENT_MAX_RETRIES": "0", "HOSPITALDB_API_WAIT_SECONDS": "0"},
        )
        wait_for_blocked_refresh(demo_database, timeout=120)
        server.stop()
    finally:
        blocker.release()  # the run ends, completed, with no Prefect server to hear it
    output, _ = run.communicate(timeout=600)
    flow_run_id = the_run(demo_database)
    assert scalar(demo_database, "SELECT outcome FROM etl_audit.refresh_runs") == "completed", output

    server.start()
    assert prefect_view(server, flow_run_id)[0].is_running(), "the fault: Prefect never heard it end"
    check = freshness_process(server, demo_database, arguments.split(", retries")[0])
    output, _ = check.communicate(timeout=600)
    assert check.returncode == 0, output

    assert_healed(server, demo_database, flow_run_id, "COMPLETED")
    assert not smtp.received and not webhook.posts, "nothing failed, nothing is stale: nobody is paged"
