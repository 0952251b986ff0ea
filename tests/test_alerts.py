"""Failure alerts and recovery notices, delivered to real SMTP and HTTP servers on loopback."""

from __future__ import annotations

import signal
import uuid

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.settings import PREFECT_UI_URL, temporary_settings

from hospitaldb.engine.db.database import DATABASE_URL_ENV, target_from_url
from hospitaldb.record.monitoring import run_monitoring_query
from hospitaldb_testing.db import add_source_rows, execute
from hospitaldb_testing.receivers import (
    SMTP_PASSWORD,
    SilentServer,
    WebhookServer,
    free_port,
    save_email_block,
)
from hospitaldb_testing.runs import TableLock, flow_process, run_flow, run_logs, wait_for_blocked_refresh

NEGATIVE_PAYMENT = "INSERT INTO staging.payments VALUES (999999991, 90000011, -1000000, '2026-07-09', 'cash')"


def break_step_2(url: str) -> None:
    add_source_rows(url)
    execute(url, NEGATIVE_PAYMENT)


def test_sql_error_in_step_2_sends_exactly_one_email_and_one_slack_message(
    demo_database, alert_blocks, smtp_server, webhook_server, monkeypatch
):
    # A password in the connection URL must not reach the alert.
    monkeypatch.setenv(DATABASE_URL_ENV, demo_database.replace("postgres@", "postgres:db-Pa55@", 1))
    break_step_2(demo_database)

    with temporary_settings({PREFECT_UI_URL: "http://prefect.hospital.example"}):
        state = run_flow(retries=3, **alert_blocks)

    assert state.is_failed()
    assert len(smtp_server.received) == 1
    mail = smtp_server.received[0]
    assert mail.mail_from == "alerts"
    assert mail.recipients == ["oncall@hospital.example", "data-team@hospital.example"]
    assert mail.message["Subject"] == "[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables"
    body = mail.text
    run_id = str(state.state_details.flow_run_id)
    for fact in (
        "Flow:        hospitaldb-refresh",
        "Failed step: refresh_phase3_reporting_tables",
        "Attempts:    1",
        "check_violation on reporting.revenue_summary, constraint revenue_summary_paid_amount_check",
        "SQLSTATE 23514",
        "sql/refresh_phase3_reporting_tables.sql:",
        "INSERT INTO reporting.revenue_summary",
        f"Run page:    http://prefect.hospital.example/runs/flow-run/{run_id}",
        f"prefect flow-run logs {run_id}",
        " UTC",
        "rolled back",
    ):
        assert fact in body, body
    assert len(webhook_server.posts) == 1
    path, payload = webhook_server.posts[0]
    assert path == "/services/T000/B000/XoXoSECRETtoken"
    assert payload["text"].startswith("[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables\n")
    assert "Failed step: refresh_phase3_reporting_tables" in payload["text"]
    assert "Failing row contains" not in body, "row values (patient data) stay in the database"
    for secret in ("db-Pa55", SMTP_PASSWORD, "XoXoSECRETtoken"):
        assert secret not in mail.message.as_string()
        assert secret not in payload["text"]
        assert secret not in run_logs(state)


def test_attempts_count_the_retries_of_a_transient_failure(demo_database, alert_blocks, smtp_server):
    blocker = TableLock(demo_database, "dashboards.daily_revenue")
    try:
        state = run_flow(retries=2, lock_timeout_seconds=0.3, **alert_blocks)
    finally:
        blocker.release()
    assert state.is_failed()
    assert len(smtp_server.received) == 1, "one alert per run, not per attempt"
    body = smtp_server.received[0].text
    assert "Failed step: refresh_dashboards" in body
    assert "Attempts:    3" in body
    assert "lock timeout" in body


def test_failure_then_success_sends_a_recovered_notice_once(
    demo_database, alert_blocks, smtp_server, webhook_server
):
    break_step_2(demo_database)
    assert run_flow(retries=0, **alert_blocks).is_failed()
    execute(demo_database, "DELETE FROM staging.payments WHERE payment_id = 999999991")

    assert run_flow(**alert_blocks).is_completed()
    assert run_flow(**alert_blocks).is_completed()

    subjects = [mail.message["Subject"] for mail in smtp_server.received]
    assert subjects == [
        "[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables",
        "[HospitalDB] Refresh recovered",
    ]
    assert "ended failed" in smtp_server.received[1].text
    assert [text.splitlines()[0] for text in webhook_server.texts()] == [
        "[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables",
        "[HospitalDB] Refresh recovered",
    ]


def custom_webhook(name: str, url: str) -> str:
    """A CustomWebhookNotificationBlock posting {"text": subject + body}, as a pager's inbound hook takes it.

    The URL (its token) is a secret of the block, not a plain field; private URLs are allowed
    because the receiver is on loopback (Prefect refuses them by default, against SSRF).
    """
    CustomWebhookNotificationBlock(
        name="HospitalDB pager",
        url="{{pager_url}}",
        json_data={"text": "{{subject}}\n{{body}}"},
        secrets={"pager_url": url},
        allow_private_urls=True,
    ).save(name, overwrite=True)
    return f"custom-webhook/{name}"


def test_any_notification_block_gets_one_failure_and_one_recovered_notice(
    demo_database, alert_blocks, smtp_server, webhook_server
):
    pager = WebhookServer()
    channels = [
        f"email-server-credentials/{alert_blocks['email_block']}",
        f"slack-incoming-webhook/{alert_blocks['slack_block']}",
        custom_webhook(f"pager-{uuid.uuid4().hex[:8]}", pager.url),
    ]
    parameters = {"alert_blocks": channels, "alert_emails": alert_blocks["alert_emails"]}
    try:
        break_step_2(demo_database)
        assert run_flow(retries=0, **parameters).is_failed()
        execute(demo_database, "DELETE FROM staging.payments WHERE payment_id = 999999991")
        assert run_flow(**parameters).is_completed()
    finally:
        pager.shutdown()
        pager.server_close()

    expected = [
        "[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables",
        "[HospitalDB] Refresh recovered",
    ]
    assert [mail.message["Subject"] for mail in smtp_server.received] == expected
    assert [text.splitlines()[0] for text in webhook_server.texts()] == expected
    assert [text.splitlines()[0] for text in pager.texts()] == expected
    assert "Failed step: refresh_phase3_reporting_tables" in pager.texts()[0]
    assert {path for path, _ in pager.posts} == {"/services/T000/B000/XoXoSECRETtoken"}


def test_a_hanging_webhook_is_given_up_within_its_limit_and_the_others_still_hear(
    demo_database, alert_blocks, smtp_server, monkeypatch
):
    silent = SilentServer()
    monkeypatch.setenv("HOSPITALDB_ALERT_TIMEOUT_SECONDS", "2")
    hanging = custom_webhook(f"hanging-{uuid.uuid4().hex[:8]}", f"http://127.0.0.1:{silent.port}/hook")
    break_step_2(demo_database)
    try:
        state = run_flow(
            retries=0,
            alert_blocks=[hanging, f"email-server-credentials/{alert_blocks['email_block']}"],
            alert_emails=alert_blocks["alert_emails"],
        )
    finally:
        silent.close()
    assert state.is_failed()
    assert "revenue_summary_paid_amount_check" in state.message, "the run's own outcome, unchanged"
    assert f"alert not sent to {hanging}: TimeoutError: no answer within 2 s" in run_logs(state)
    assert len(smtp_server.received) == 1, "the next channel still gets its alert"


def test_recovered_is_decided_per_database_from_its_own_record(
    demo_database, other_demo_database, alert_blocks, smtp_server, monkeypatch
):
    break_step_2(demo_database)
    assert run_flow(retries=0, **alert_blocks).is_failed()

    monkeypatch.setenv(DATABASE_URL_ENV, other_demo_database)
    assert run_flow(**alert_blocks).is_completed()
    assert [mail.message["Subject"] for mail in smtp_server.received] == [
        "[HospitalDB] Refresh FAILED at refresh_phase3_reporting_tables"
    ], "a good run of another database recovers nothing"

    execute(demo_database, "DELETE FROM staging.payments WHERE payment_id = 999999991")
    monkeypatch.setenv(DATABASE_URL_ENV, demo_database)
    assert run_flow(**alert_blocks).is_completed()
    assert smtp_server.received[-1].message["Subject"] == "[HospitalDB] Refresh recovered"
    assert "ended failed" in smtp_server.received[-1].text
    assert len(smtp_server.received) == 2


def test_sigterm_mid_step_sends_the_crash_alert(
    demo_database, alert_blocks, smtp_server, webhook_server, prefect
):
    blocker = TableLock(demo_database, "reporting.patient_summary")
    process = flow_process(
        prefect,
        demo_database,
        f"lock_timeout_seconds=120, email_block={alert_blocks['email_block']!r}, "
        f"slack_block={alert_blocks['slack_block']!r}, alert_emails={alert_blocks['alert_emails']!r}",
    )
    try:
        wait_for_blocked_refresh(demo_database)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        blocker.release()
        process.kill()

    assert len(smtp_server.received) == 1, output
    mail = smtp_server.received[0]
    assert mail.message["Subject"] == "[HospitalDB] Refresh CRASHED at refresh_phase3_reporting_tables"
    assert "State:       Crashed" in mail.text
    assert "The run was killed" in mail.text
    assert len(webhook_server.posts) == 1
    (crashed,) = run_monitoring_query(target_from_url(demo_database, "test"), "failed_runs")
    assert (crashed["outcome"], crashed["failed_at"]) == ("crashed", "refresh_phase3_reporting_tables")
    assert crashed["error"] == mail.text.split("Error:")[1].split("\n")[0].strip(), (
        "one text, whoever wrote it"
    )


def test_smtp_down_and_webhook_500_leave_the_run_state_alone_and_log_why(
    demo_database, alert_blocks, smtp_server, webhook_server
):
    save_email_block(alert_blocks["email_block"], port=free_port())  # nothing listens there
    webhook_server.status = 500
    break_step_2(demo_database)

    state = run_flow(retries=0, **alert_blocks)

    assert state.is_failed()
    assert "revenue_summary_paid_amount_check" in state.message
    logs = run_logs(state)
    assert (
        f"alert not sent to email-server-credentials/{alert_blocks['email_block']}: ConnectionRefusedError"
        in logs
    )
    assert (
        f"alert not sent to slack-incoming-webhook/{alert_blocks['slack_block']}: NotificationError" in logs
    )
    assert len(webhook_server.posts) == 1, "the webhook was tried once"


def test_missing_blocks_and_recipients_are_logged_with_how_to_fix(demo_database, alert_blocks, monkeypatch):
    monkeypatch.delenv("HOSPITALDB_ALERT_EMAILS", raising=False)
    break_step_2(demo_database)

    state = run_flow(
        retries=0, email_block="no-such-email", slack_block="no-such-slack", alert_emails=["a@b.example"]
    )
    logs = run_logs(state)
    assert state.is_failed()
    assert "alert not sent to email-server-credentials/no-such-email: no block" in logs
    assert "deployments/create_blocks.py" in logs
    assert "alert not sent to slack-incoming-webhook/no-such-slack: no block" in logs

    state = run_flow(retries=0, email_block=alert_blocks["email_block"], slack_block="no-such-slack")
    assert "no recipients: set HOSPITALDB_ALERT_EMAILS" in run_logs(state)

    state = run_flow(retries=0, alert_blocks=["hospitaldb-email", "prefect-default/nothing"])
    logs = run_logs(state)
    assert "alert not sent to hospitaldb-email: 'hospitaldb-email' is not a block reference" in logs
    assert "alert not sent to prefect-default/nothing: no block" in logs


def test_a_hung_smtp_server_costs_bounded_time_and_a_logged_error(demo_database, alert_blocks, monkeypatch):
    silent = SilentServer()
    save_email_block(alert_blocks["email_block"], port=silent.port)
    monkeypatch.setenv("HOSPITALDB_ALERT_TIMEOUT_SECONDS", "2")
    break_step_2(demo_database)
    try:
        state = run_flow(retries=0, **alert_blocks)
    finally:
        silent.close()
    assert state.is_failed()
    assert "revenue_summary_paid_amount_check" in state.message
    assert (
        f"alert not sent to email-server-credentials/{alert_blocks['email_block']}: TimeoutError: "
        "no answer within 2 s" in run_logs(state)
    )


def test_recipients_come_from_the_environment_when_not_a_parameter(
    demo_database, alert_blocks, smtp_server, monkeypatch
):
    monkeypatch.setenv("HOSPITALDB_ALERT_EMAILS", "dba@hospital.example; analyst@hospital.example")
    break_step_2(demo_database)
    run_flow(retries=0, email_block=alert_blocks["email_block"], slack_block=alert_blocks["slack_block"])
    assert smtp_server.received[0].recipients == ["dba@hospital.example", "analyst@hospital.example"]
