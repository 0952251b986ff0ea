"""Every HOSPITALDB_* environment variable, in one place, documented.

Each setting is read when it is needed (`setting.read()`), never at import time,
so a worker picks up a change without a restart of anything but the run. The
configuration page (docs/configuration.md) draws its table of variables from `ALL`
when the site is built, so a variable added here is documented there.
A few are read outside Python (dev.py before the package is installed, deploy.sh,
prefect.yaml); they are listed here all the same, with who reads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    name: str
    used_by: str
    meaning: str
    secret: bool = False

    def read(self, default: str | None = None) -> str | None:
        """The variable's value, stripped; default when it is unset or blank."""
        value = os.environ.get(self.name, "").strip()
        return value or default

    def __str__(self) -> str:
        return self.name


# The database and where the SQL lives.
DATABASE_URL = Setting(
    "HOSPITALDB_DATABASE_URL",
    "the flow, `create_blocks.py`",
    "database URL, when no block is named; `create_blocks.py` stores it as the `hospitaldb-postgres` block",
    secret=True,
)
SQL_DIR = Setting(
    "HOSPITALDB_SQL_DIR",
    "the flow",
    "the folder holding the three step files (default: this checkout's `sql/`)",
)
LOCAL_DATA_DIR = Setting(
    "HOSPITALDB_LOCAL_DATA_DIR",
    "`flows/refresh.py`",
    "where the embedded demo database lives (default `.hospitaldb/`)",
)

# Alerts, read by the flow at run time.
ALERT_EMAILS = Setting(
    "HOSPITALDB_ALERT_EMAILS",
    "the flow",
    "alert recipients, comma-separated (the `alert_emails` parameter wins)",
)
ALERT_BLOCKS = Setting(
    "HOSPITALDB_ALERT_BLOCKS",
    "the flow, `deploy.sh` (its automations)",
    "alert channels, comma-separated Prefect blocks as `<block-type-slug>/<block-name>` (the "
    "`alert_blocks` parameter wins; default: the `email_block` and `slack_block` blocks)",
)
ALERT_FROM = Setting("HOSPITALDB_ALERT_FROM", "the flow", "sender address (default: the SMTP user name)")
ALERT_TIMEOUT_SECONDS = Setting(
    "HOSPITALDB_ALERT_TIMEOUT_SECONDS", "the flow", "time limit per alert channel, in seconds (default 20)"
)
AUDIT_REQUIRED = Setting(
    "HOSPITALDB_AUDIT_REQUIRED",
    "the flow",
    "`true`: a run whose audit trail (etl_audit) cannot be written publishes nothing; `false`: it "
    "publishes anyway, with a warning. Default: `true` for a deployment's runs, `false` for local ones",
)
API_WAIT_SECONDS = Setting(
    "HOSPITALDB_API_WAIT_SECONDS",
    "the flow",
    "how long a run that ended while the Prefect API was down waits for it, to report its final state, "
    "task runs and artifacts (default 900; its alert and etl_audit never wait)",
)

# Blocks, read once by deployments/create_blocks.py.
ALLOW_PLAIN_HTTP = Setting(
    "HOSPITALDB_ALLOW_PLAIN_HTTP",
    "`create_blocks.py`, the flow",
    "`true` to store secrets on a Prefect server beyond loopback reached over plain http, and to load "
    "blocks from it in a run (refused otherwise: its auth string and the secrets would cross the "
    "network in clear); warned every time",
)
DB_HOST = Setting("HOSPITALDB_DB_HOST", "`create_blocks.py`", "database host, when no database URL is set")
DB_PORT = Setting("HOSPITALDB_DB_PORT", "`create_blocks.py`", "database port (default 5432)")
DB_NAME = Setting("HOSPITALDB_DB_NAME", "`create_blocks.py`", "database name")
DB_USER = Setting("HOSPITALDB_DB_USER", "`create_blocks.py`", "database user")
DB_PASSWORD = Setting("HOSPITALDB_DB_PASSWORD", "`create_blocks.py`", "database password", secret=True)
SMTP_HOST = Setting("HOSPITALDB_SMTP_HOST", "`create_blocks.py`", "SMTP server for `hospitaldb-email`")
SMTP_PORT = Setting("HOSPITALDB_SMTP_PORT", "`create_blocks.py`", "SMTP port (default: by type)")
SMTP_TYPE = Setting(
    "HOSPITALDB_SMTP_TYPE", "`create_blocks.py`", "SSL, STARTTLS or INSECURE (default STARTTLS)"
)
SMTP_USERNAME = Setting("HOSPITALDB_SMTP_USERNAME", "`create_blocks.py`", "SMTP user name")
SMTP_PASSWORD = Setting("HOSPITALDB_SMTP_PASSWORD", "`create_blocks.py`", "SMTP password", secret=True)
SLACK_WEBHOOK_URL = Setting(
    "HOSPITALDB_SLACK_WEBHOOK_URL",
    "`create_blocks.py`",
    "Slack incoming webhook for `hospitaldb-slack`",
    secret=True,
)
TEAMS_WEBHOOK_URL = Setting(
    "HOSPITALDB_TEAMS_WEBHOOK_URL",
    "`create_blocks.py`",
    "Microsoft Teams Workflows (Power Automate) webhook URL for `ms-teams-webhook/hospitaldb-teams`",
    secret=True,
)
PAGERDUTY_INTEGRATION_KEY = Setting(
    "HOSPITALDB_PAGERDUTY_INTEGRATION_KEY",
    "`create_blocks.py`",
    "PagerDuty Events API integration key for `pager-duty-webhook/hospitaldb-pagerduty`",
    secret=True,
)
PAGERDUTY_API_KEY = Setting(
    "HOSPITALDB_PAGERDUTY_API_KEY", "`create_blocks.py`", "PagerDuty API key for the same block", secret=True
)
OPSGENIE_API_KEY = Setting(
    "HOSPITALDB_OPSGENIE_API_KEY",
    "`create_blocks.py`",
    "Opsgenie API key for `opsgenie-webhook/hospitaldb-opsgenie`",
    secret=True,
)
ALERT_WEBHOOK_URL = Setting(
    "HOSPITALDB_ALERT_WEBHOOK_URL",
    "`create_blocks.py`",
    'any HTTPS endpoint that takes a JSON POST `{"subject", "body"}`, for `custom-webhook/hospitaldb-webhook`',
    secret=True,
)

# Least privilege, read once by deployments/create_roles.py.
ADMIN_DATABASE_URL = Setting(
    "HOSPITALDB_ADMIN_DATABASE_URL",
    "`create_roles.py`",
    "an administrator's URL of the HospitalDB, to create the least-privilege roles and their grants",
    secret=True,
)

# Development and deployment.
TEST_DATABASE_URL = Setting(
    "HOSPITALDB_TEST_DATABASE_URL",
    "tests",
    "a PostgreSQL superuser URL; tests create and drop their own databases there instead of using an "
    "embedded server (GitHub Actions: each PostgreSQL major's service)",
)
TEST_LONG_OUTAGE_SECONDS = Setting(
    "HOSPITALDB_TEST_LONG_OUTAGE_SECONDS",
    "tests",
    "make `tests/test_prefect_down.py`'s long Prefect outage real: this many seconds (480 for 8 minutes) "
    "with Prefect's own client retries, instead of a client given none",
)
VENV = Setting("HOSPITALDB_VENV", "`dev.py`", "the virtualenv to use (default `.venv/`)")
PROJECT_DIR = Setting(
    "HOSPITALDB_PROJECT_DIR",
    "`prefect.yaml` pull step",
    "the checkout the worker runs the flow from; `deploy.sh` sets it",
)

ALL: tuple[Setting, ...] = tuple(value for value in globals().values() if isinstance(value, Setting))
