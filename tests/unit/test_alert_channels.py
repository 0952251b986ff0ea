"""Which channels a run alerts, and what a bad channel costs: the channel list and delivery rules."""

from __future__ import annotations

import logging
import threading

from hospitaldb.report.notifications import Alert, AlertNotSent, AlertSettings, deliver

ALERT = Alert(subject="[HospitalDB] Refresh FAILED", body="body")


def test_the_parameter_wins_over_the_setting_which_wins_over_the_email_and_slack_blocks(monkeypatch):
    monkeypatch.delenv("HOSPITALDB_ALERT_BLOCKS", raising=False)
    assert AlertSettings.from_parameters({"email_block": "mail", "slack_block": "chat"}).channels == (
        "email-server-credentials/mail",
        "slack-incoming-webhook/chat",
    )
    monkeypatch.setenv("HOSPITALDB_ALERT_BLOCKS", "ms-teams-webhook/oncall; pager-duty-webhook/dba,")
    assert AlertSettings.from_parameters({"email_block": "mail"}).channels == (
        "ms-teams-webhook/oncall",
        "pager-duty-webhook/dba",
    )
    chosen = {"alert_blocks": ["custom-webhook/pager", " custom-webhook/pager", ""]}
    assert AlertSettings.from_parameters(chosen).channels == ("custom-webhook/pager",)


def test_every_channel_is_tried_at_once_and_a_hung_one_is_abandoned_at_the_limit(caplog):
    release = threading.Event()
    tried = []

    def send(alert: Alert, channel: str, settings: AlertSettings) -> None:
        tried.append(channel)
        if channel == "custom-webhook/hangs":
            release.wait()
        elif channel == "custom-webhook/refuses":
            raise AlertNotSent("no block 'custom-webhook/refuses'")

    settings = AlertSettings(
        channels=("custom-webhook/hangs", "custom-webhook/refuses", "slack-incoming-webhook/works"),
        timeout_seconds=0.5,
    )
    with caplog.at_level(logging.INFO):
        delivered = deliver(ALERT, settings, logging.getLogger("test"), send=send)
    release.set()
    assert delivered == {
        "custom-webhook/hangs": False,
        "custom-webhook/refuses": False,
        "slack-incoming-webhook/works": True,
    }
    assert sorted(tried) == sorted(settings.channels)
    assert "alert not sent to custom-webhook/hangs: TimeoutError: no answer within 0.5 s" in caplog.text
    assert "alert not sent to custom-webhook/refuses: no block" in caplog.text
    assert "alert sent to slack-incoming-webhook/works" in caplog.text


def test_a_delivery_error_never_logs_the_services_url_beyond_its_host(caplog):
    def send(alert: Alert, channel: str, settings: AlertSettings) -> None:
        raise RuntimeError(
            "Client error '403 Forbidden' for url 'https://prod-00.westeurope.logic.azure.com:443/workflows/0a1b/"
            "triggers/manual/paths/invoke?api-version=2016-06-01&sig=TeamsSecretSig'"
        )

    with caplog.at_level(logging.INFO):
        deliver(
            ALERT, AlertSettings(channels=("ms-teams-webhook/oncall",)), logging.getLogger("test"), send=send
        )
    assert "TeamsSecretSig" not in caplog.text and "/workflows/" not in caplog.text
    assert "https://prod-00.westeurope.logic.azure.com:443/***" in caplog.text
