"""Create or update the Prefect blocks HospitalDB refresh uses, from environment variables.

    python deployments/create_blocks.py

Idempotent: run it again after changing a variable. Secrets (passwords, the webhook
URL) are stored as secret fields. Blocks whose variables are missing are skipped
and named in the output; the others are still created.

Database, SqlAlchemyConnector 'hospitaldb-postgres':
    HOSPITALDB_DATABASE_URL (postgresql://USER:PASSWORD@HOST:PORT/DBNAME), or
    HOSPITALDB_DB_HOST, HOSPITALDB_DB_NAME, HOSPITALDB_DB_USER, HOSPITALDB_DB_PASSWORD,
    HOSPITALDB_DB_PORT (default 5432)
Email, EmailServerCredentials 'hospitaldb-email':
    HOSPITALDB_SMTP_HOST, HOSPITALDB_SMTP_PORT (default by type), HOSPITALDB_SMTP_TYPE
    (SSL, STARTTLS or INSECURE; default STARTTLS), HOSPITALDB_SMTP_USERNAME,
    HOSPITALDB_SMTP_PASSWORD
Slack, SlackWebhook 'hospitaldb-slack':
    HOSPITALDB_SLACK_WEBHOOK_URL
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "flows"))

from hospitaldb.database import (
    DATABASE_URL_ENV,
    DEFAULT_DATABASE_BLOCK,
    DatabaseNotConfigured,
    target_from_url,
)
from hospitaldb.notifications import DEFAULT_EMAIL_BLOCK, DEFAULT_SLACK_BLOCK


class Skipped(Exception):
    """Not enough variables for this block."""


def env(name: str) -> str:
    return os.environ.get(name, "").strip()


def require(*names: str) -> None:
    missing = [name for name in names if not env(name)]
    if missing:
        raise Skipped(f"{', '.join(missing)} not set")


def database_block() -> str:
    from prefect_sqlalchemy import ConnectionComponents, SqlAlchemyConnector, SyncDriver

    if env(DATABASE_URL_ENV):
        url = target_from_url(env(DATABASE_URL_ENV), DATABASE_URL_ENV).url
        parts = {
            "host": url.host,
            "port": url.port,
            "database": url.database,
            "username": url.username,
            "password": url.password,
            "query": dict(url.query) or None,
        }
    else:
        require("HOSPITALDB_DB_HOST", "HOSPITALDB_DB_NAME", "HOSPITALDB_DB_USER")
        parts = {
            "host": env("HOSPITALDB_DB_HOST"),
            "port": int(env("HOSPITALDB_DB_PORT") or 5432),
            "database": env("HOSPITALDB_DB_NAME"),
            "username": env("HOSPITALDB_DB_USER"),
            "password": env("HOSPITALDB_DB_PASSWORD") or None,
        }
    components = ConnectionComponents(driver=SyncDriver.POSTGRESQL_PSYCOPG2, **parts)
    SqlAlchemyConnector(connection_info=components).save(DEFAULT_DATABASE_BLOCK, overwrite=True)
    return f"SqlAlchemyConnector '{DEFAULT_DATABASE_BLOCK}' ({parts['database']} on {parts['host']})"


def email_block() -> str:
    from prefect_email import EmailServerCredentials

    require("HOSPITALDB_SMTP_HOST")
    smtp_type = (env("HOSPITALDB_SMTP_TYPE") or "STARTTLS").upper()
    if smtp_type not in {"SSL", "STARTTLS", "INSECURE"}:
        raise ValueError(f"HOSPITALDB_SMTP_TYPE must be SSL, STARTTLS or INSECURE, not '{smtp_type}'")
    EmailServerCredentials(
        smtp_server=env("HOSPITALDB_SMTP_HOST"),
        smtp_port=int(env("HOSPITALDB_SMTP_PORT")) if env("HOSPITALDB_SMTP_PORT") else None,
        smtp_type=smtp_type,
        username=env("HOSPITALDB_SMTP_USERNAME") or None,
        password=env("HOSPITALDB_SMTP_PASSWORD") or None,
    ).save(DEFAULT_EMAIL_BLOCK, overwrite=True)
    return f"EmailServerCredentials '{DEFAULT_EMAIL_BLOCK}' ({env('HOSPITALDB_SMTP_HOST')}, {smtp_type})"


def slack_block() -> str:
    from prefect_slack import SlackWebhook

    require("HOSPITALDB_SLACK_WEBHOOK_URL")
    SlackWebhook(url=env("HOSPITALDB_SLACK_WEBHOOK_URL")).save(DEFAULT_SLACK_BLOCK, overwrite=True)
    return f"SlackWebhook '{DEFAULT_SLACK_BLOCK}'"


BLOCKS: dict[str, Callable[[], str]] = {
    "database": database_block,
    "email": email_block,
    "slack": slack_block,
}


def main() -> int:
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


if __name__ == "__main__":
    sys.exit(main())
