"""deployments/create_blocks.py: blocks from environment variables, idempotent, secrets kept secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from prefect.blocks.notifications import (
    CustomWebhookNotificationBlock,
    MicrosoftTeamsWebhook,
    OpsgenieWebhook,
    PagerDutyWebHook,
)
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound
from prefect_email import EmailServerCredentials
from prefect_slack import SlackWebhook
from prefect_sqlalchemy import SqlAlchemyConnector

from hospitaldb.paths import PROJECT_ROOT

BLOCKS = [
    ("hospitaldb-postgres", SqlAlchemyConnector),
    ("hospitaldb-email", EmailServerCredentials),
    ("hospitaldb-slack", SlackWebhook),
    ("hospitaldb-teams", MicrosoftTeamsWebhook),
    ("hospitaldb-pagerduty", PagerDutyWebHook),
    ("hospitaldb-opsgenie", OpsgenieWebhook),
    ("hospitaldb-webhook", CustomWebhookNotificationBlock),
]


@pytest.fixture(autouse=True)
def remove_default_blocks(prefect):
    """The default blocks would change how other tests find their database: remove them after."""
    yield
    with get_client(sync_client=True) as client:
        for name, block_type in BLOCKS:
            try:
                document = client.read_block_document_by_name(name, block_type.get_block_type_slug())
            except ObjectNotFound:
                continue
            client.delete_block_document(document.id)


def create_blocks(prefect: str, **variables: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSPITALDB_")}
    env.update(PREFECT_API_URL=prefect, **variables)
    return subprocess.run(
        [sys.executable, "deployments/create_blocks.py"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_partial_configuration_creates_what_it_can_and_says_what_it_skipped(prefect):
    done = create_blocks(
        prefect, HOSPITALDB_SMTP_HOST="smtp.hospital.example", HOSPITALDB_SMTP_PASSWORD="mail-pw"
    )
    assert done.returncode == 0, done.stderr
    assert (
        "saved    EmailServerCredentials 'hospitaldb-email' (smtp.hospital.example, STARTTLS)" in done.stdout
    )
    assert (
        "skipped  database: HOSPITALDB_DB_HOST, HOSPITALDB_DB_NAME, HOSPITALDB_DB_USER not set" in done.stdout
    )
    assert "skipped  slack: HOSPITALDB_SLACK_WEBHOOK_URL not set" in done.stdout
    assert "mail-pw" not in done.stdout + done.stderr


def test_full_configuration_twice_gives_the_same_blocks_with_secrets_stored_as_secrets(prefect):
    variables = {
        "HOSPITALDB_DATABASE_URL": "postgresql://refresher:db-secret@db.hospital.example:6432/hospitaldb",
        "HOSPITALDB_SMTP_HOST": "smtp.hospital.example",
        "HOSPITALDB_SMTP_TYPE": "ssl",
        "HOSPITALDB_SMTP_PORT": "465",
        "HOSPITALDB_SMTP_USERNAME": "alerts@hospital.example",
        "HOSPITALDB_SMTP_PASSWORD": "mail-secret",
        "HOSPITALDB_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T1/B1/hook-secret",
        "HOSPITALDB_TEAMS_WEBHOOK_URL": (
            "https://prod-00.westeurope.logic.azure.com:443/workflows/0123abcd/triggers/manual/paths/invoke"
            "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=teams-secret"
        ),
        "HOSPITALDB_PAGERDUTY_INTEGRATION_KEY": "pd-integration-secret",
        "HOSPITALDB_PAGERDUTY_API_KEY": "pd-api-secret",
        "HOSPITALDB_OPSGENIE_API_KEY": "opsgenie-secret",
        "HOSPITALDB_ALERT_WEBHOOK_URL": "https://pager.hospital.example/hook/webhook-secret",
    }
    for _ in range(2):
        done = create_blocks(prefect, **variables)
        assert done.returncode == 0, done.stderr
        assert done.stdout.count("saved") == len(BLOCKS)
        assert "-secret" not in done.stdout

    database = SqlAlchemyConnector.load("hospitaldb-postgres")
    assert database.connection_info.host == "db.hospital.example"
    assert database.connection_info.port == 6432
    assert database.connection_info.password.get_secret_value() == "db-secret"
    email = EmailServerCredentials.load("hospitaldb-email")
    assert (email.smtp_server, email.smtp_port, email.smtp_type.name) == ("smtp.hospital.example", 465, "SSL")
    assert SlackWebhook.load("hospitaldb-slack").url.get_secret_value().endswith("hook-secret")
    webhook = CustomWebhookNotificationBlock.load("hospitaldb-webhook")
    assert webhook.secrets.get_secret_value() == {"webhook_url": variables["HOSPITALDB_ALERT_WEBHOOK_URL"]}
    assert PagerDutyWebHook.load("hospitaldb-pagerduty").api_key.get_secret_value() == "pd-api-secret"

    with get_client(sync_client=True) as client:
        for name, block_type in BLOCKS:
            stored = client.read_block_document_by_name(
                name, block_type.get_block_type_slug(), include_secrets=False
            )
            assert "-secret" not in str(stored.data), f"{name} stores a secret in plain text"


def test_invalid_smtp_type_is_an_error_naming_the_variable(prefect):
    done = create_blocks(prefect, HOSPITALDB_SMTP_HOST="smtp.example", HOSPITALDB_SMTP_TYPE="TLS")
    assert done.returncode == 1
    assert "HOSPITALDB_SMTP_TYPE must be SSL, STARTTLS or INSECURE" in done.stderr


def test_a_password_in_the_urls_query_is_stored_as_the_blocks_secret(prefect):
    url = "postgresql://refresher@db.hospital.example:6432/hospitaldb?password=query-secret&sslmode=require"
    done = create_blocks(prefect, HOSPITALDB_DATABASE_URL=url)
    assert done.returncode == 0, done.stderr
    assert "query-secret" not in done.stdout + done.stderr

    database = SqlAlchemyConnector.load("hospitaldb-postgres")
    assert database.connection_info.password.get_secret_value() == "query-secret"
    assert database.connection_info.query == {"sslmode": "require"}
    with get_client(sync_client=True) as client:
        stored = client.read_block_document_by_name(
            "hospitaldb-postgres", SqlAlchemyConnector.get_block_type_slug(), include_secrets=False
        )
    assert "query-secret" not in str(stored.data)
