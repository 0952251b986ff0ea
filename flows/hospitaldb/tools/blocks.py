"""Create or update the Prefect blocks HospitalDB refresh uses, from environment variables.

    hospitaldb blocks               (or: python deployments/create_blocks.py)

Idempotent: run it again after changing a variable. Secrets (passwords, the webhook
URL) are stored as secret fields, and only on a server that asks for credentials or
that nothing beyond this machine's loopback can reach (hospitaldb.tools.server_guard):
anyone who can call a server's API can read its blocks' secrets. Blocks whose
variables are missing are skipped and named in the output; the others are still created.

Database, SqlAlchemyConnector 'hospitaldb-postgres':
    HOSPITALDB_DATABASE_URL (postgresql://USER:PASSWORD@HOST:PORT/DBNAME), or
    HOSPITALDB_DB_HOST, HOSPITALDB_DB_NAME, HOSPITALDB_DB_USER, HOSPITALDB_DB_PASSWORD,
    HOSPITALDB_DB_PORT (default 5432)
Email, EmailServerCredentials 'hospitaldb-email':
    HOSPITALDB_SMTP_HOST, HOSPITALDB_SMTP_PORT (default by type), HOSPITALDB_SMTP_TYPE
    (SSL, STARTTLS or INSECURE; default STARTTLS), HOSPITALDB_SMTP_USERNAME,
    HOSPITALDB_SMTP_PASSWORD
Slack, SlackWebhook 'hospitaldb-slack' (slack-incoming-webhook):
    HOSPITALDB_SLACK_WEBHOOK_URL
On-call channels, Prefect notification blocks (alerts reach them once named in
HOSPITALDB_ALERT_BLOCKS or the alert_blocks parameter, as <block-type-slug>/<block-name>):
    Microsoft Teams, ms-teams-webhook/hospitaldb-teams: HOSPITALDB_TEAMS_WEBHOOK_URL
    PagerDuty, pager-duty-webhook/hospitaldb-pagerduty: HOSPITALDB_PAGERDUTY_INTEGRATION_KEY,
        HOSPITALDB_PAGERDUTY_API_KEY
    Opsgenie, opsgenie-webhook/hospitaldb-opsgenie: HOSPITALDB_OPSGENIE_API_KEY
    Any webhook taking a JSON {"subject", "body"}, custom-webhook/hospitaldb-webhook:
        HOSPITALDB_ALERT_WEBHOOK_URL
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from hospitaldb import settings
from hospitaldb.engine.db.database import DEFAULT_DATABASE_BLOCK, DatabaseNotConfigured, target_from_url
from hospitaldb.report.notifications import DEFAULT_EMAIL_BLOCK, DEFAULT_SLACK_BLOCK
from hospitaldb.settings import Setting
from hospitaldb.tools.server_guard import check

TEAMS_BLOCK = "hospitaldb-teams"
PAGERDUTY_BLOCK = "hospitaldb-pagerduty"
OPSGENIE_BLOCK = "hospitaldb-opsgenie"
WEBHOOK_BLOCK = "hospitaldb-webhook"


class Skipped(Exception):
    """Not enough variables for this block."""


def env(setting: Setting) -> str:
    return setting.read() or ""


def require(*required: Setting) -> None:
    missing = [setting.name for setting in required if not setting.read()]
    if missing:
        raise Skipped(f"{', '.join(missing)} not set")


def database_block() -> str:
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    if env(settings.DATABASE_URL):
        url = target_from_url(env(settings.DATABASE_URL), settings.DATABASE_URL.name).url
        # libpq takes ?password= too: it is a password all the same, stored as the block's secret,
        # never in its plain query field.
        query = dict(url.query)
        password = url.password or query.pop("password", None)
        parts = {
            "host": url.host,
            "port": url.port,
            "database": url.database,
            "username": url.username,
            "password": password,
            "query": query or None,
        }
    else:
        require(settings.DB_HOST, settings.DB_NAME, settings.DB_USER)
        parts = {
            "host": env(settings.DB_HOST),
            "port": int(env(settings.DB_PORT) or 5432),
            "database": env(settings.DB_NAME),
            "username": env(settings.DB_USER),
            "password": env(settings.DB_PASSWORD) or None,
        }
    components = ConnectionComponents(driver=SyncDriver.POSTGRESQL_PSYCOPG2, **parts)
    SqlAlchemyConnector(connection_info=components).save(DEFAULT_DATABASE_BLOCK, overwrite=True)
    return f"SqlAlchemyConnector '{DEFAULT_DATABASE_BLOCK}' ({parts['database']} on {parts['host']})"


def email_block() -> str:
    from prefect_email import EmailServerCredentials

    require(settings.SMTP_HOST)
    smtp_type = (env(settings.SMTP_TYPE) or "STARTTLS").upper()
    if smtp_type not in {"SSL", "STARTTLS", "INSECURE"}:
        raise ValueError(f"{settings.SMTP_TYPE} must be SSL, STARTTLS or INSECURE, not '{smtp_type}'")
    EmailServerCredentials(
        smtp_server=env(settings.SMTP_HOST),
        smtp_port=int(env(settings.SMTP_PORT)) if env(settings.SMTP_PORT) else None,
        smtp_type=smtp_type,
        username=env(settings.SMTP_USERNAME) or None,
        password=env(settings.SMTP_PASSWORD) or None,
    ).save(DEFAULT_EMAIL_BLOCK, overwrite=True)
    return f"EmailServerCredentials '{DEFAULT_EMAIL_BLOCK}' ({env(settings.SMTP_HOST)}, {smtp_type})"


def slack_block() -> str:
    from prefect_slack import SlackWebhook

    require(settings.SLACK_WEBHOOK_URL)
    SlackWebhook(url=env(settings.SLACK_WEBHOOK_URL)).save(DEFAULT_SLACK_BLOCK, overwrite=True)
    return f"SlackWebhook '{DEFAULT_SLACK_BLOCK}'"


# The common on-call channels: Prefect's own notification blocks, each secret kept as a secret
# field. Name them in HOSPITALDB_ALERT_BLOCKS (or the alert_blocks parameter) to use them.
def teams_block() -> str:
    from prefect.blocks.notifications import MicrosoftTeamsWebhook

    require(settings.TEAMS_WEBHOOK_URL)
    MicrosoftTeamsWebhook(url=env(settings.TEAMS_WEBHOOK_URL)).save(TEAMS_BLOCK, overwrite=True)
    return f"MicrosoftTeamsWebhook 'ms-teams-webhook/{TEAMS_BLOCK}'"


def pagerduty_block() -> str:
    from prefect.blocks.notifications import PagerDutyWebHook

    require(settings.PAGERDUTY_INTEGRATION_KEY, settings.PAGERDUTY_API_KEY)
    PagerDutyWebHook(
        integration_key=env(settings.PAGERDUTY_INTEGRATION_KEY),
        api_key=env(settings.PAGERDUTY_API_KEY),
        source="hospitaldb-refresh",
        component="hospitaldb",
    ).save(PAGERDUTY_BLOCK, overwrite=True)
    return f"PagerDutyWebHook 'pager-duty-webhook/{PAGERDUTY_BLOCK}'"


def opsgenie_block() -> str:
    from prefect.blocks.notifications import OpsgenieWebhook

    require(settings.OPSGENIE_API_KEY)
    OpsgenieWebhook(apikey=env(settings.OPSGENIE_API_KEY), tags=["hospitaldb"]).save(
        OPSGENIE_BLOCK, overwrite=True
    )
    return f"OpsgenieWebhook 'opsgenie-webhook/{OPSGENIE_BLOCK}'"


def webhook_block() -> str:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    require(settings.ALERT_WEBHOOK_URL)
    # The URL goes into the block's secrets (a template fills it in), never a plain field.
    CustomWebhookNotificationBlock(
        name="HospitalDB refresh",
        url="{{webhook_url}}",
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        secrets={"webhook_url": env(settings.ALERT_WEBHOOK_URL)},
    ).save(WEBHOOK_BLOCK, overwrite=True)
    return f"CustomWebhookNotificationBlock 'custom-webhook/{WEBHOOK_BLOCK}'"


BLOCKS: dict[str, Callable[[], str]] = {
    "database": database_block,
    "email": email_block,
    "slack": slack_block,
    "teams": teams_block,
    "pagerduty": pagerduty_block,
    "opsgenie": opsgenie_block,
    "webhook": webhook_block,
}


def server_refuses_secrets() -> str | None:
    """Why the Prefect server must not be given secrets (hospitaldb.tools.server_guard), or None.

    What the guard accepted but cannot vouch for is printed as a warning.
    """
    from prefect.settings import PREFECT_API_URL

    api_url = PREFECT_API_URL.value()
    if not api_url:
        return "PREFECT_API_URL is not set: the blocks would go to a temporary server and be lost."
    try:
        verdict = check(api_url)
    except OSError as error:
        return f"Cannot reach the Prefect server at {api_url}: {error}. Nothing was stored."
    for warning in verdict.warnings:
        print(f"warning  {warning}", file=sys.stderr)
    return verdict.refusal


def main(argv: list[str] | None = None, prog: str = "hospitaldb blocks") -> int:
    import argparse

    argparse.ArgumentParser(prog=prog, description=(__doc__ or "").split("\n\n")[0]).parse_args(argv)
    refused = server_refuses_secrets()
    if refused:
        print(f"error    {refused}", file=sys.stderr)
        return 1
    failed = False
    for kind, create in BLOCKS.items():
        try:
            print(f"saved    {create()}")
        except Skipped as why:
            print(f"skipped  {kind}: {why}")
        except (ValueError, DatabaseNotConfigured) as error:
            print(f"error    {kind}: {error}", file=sys.stderr)
            failed = True
    return 1 if failed else 0
