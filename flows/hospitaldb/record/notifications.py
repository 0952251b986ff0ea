"""Delivery of alerts and notices, by email (default) and Slack (optional).

The state hooks (hospitaldb.record.hooks) send one message per run, never one per attempt
or per task. Delivery goes through the prefect-email `EmailServerCredentials` and
prefect-slack `SlackWebhook` blocks, each channel in its own thread with a time
limit, so a dead SMTP server or a hanging webhook costs a logged error, never the
run's own state.

prefect-email's and prefect-slack's message *tasks* are async: called from a sync
hook they return an un-awaited coroutine and send nothing. We await the email
coroutine ourselves (asyncio.run in the sender thread) and use the webhook
block's synchronous `notify`, which raises on HTTP errors.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hospitaldb.record.alerts import Alert
from hospitaldb.settings import ALERT_EMAILS, ALERT_FROM, ALERT_TIMEOUT_SECONDS
from hospitaldb.text import safe

DEFAULT_EMAIL_BLOCK = "hospitaldb-email"
DEFAULT_SLACK_BLOCK = "hospitaldb-slack"
DEFAULT_TIMEOUT_SECONDS = 20.0
ERROR_LENGTH = 700


class AlertNotSent(RuntimeError):
    """A channel could not deliver; the message says why and what to do."""


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go: read at run time from the run's parameters and the environment."""

    email_block: str = DEFAULT_EMAIL_BLOCK
    slack_block: str = DEFAULT_SLACK_BLOCK
    recipients: tuple[str, ...] = ()
    sender: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS

    @classmethod
    def for_run(cls, flow_run: Any) -> AlertSettings:
        return cls.from_parameters(getattr(flow_run, "parameters", None) or {})

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> AlertSettings:
        recipients = parameters.get("alert_emails") or [
            address for address in (ALERT_EMAILS.read() or "").replace(";", ",").split(",")
        ]
        return cls(
            email_block=parameters.get("email_block") or DEFAULT_EMAIL_BLOCK,
            slack_block=parameters.get("slack_block") or DEFAULT_SLACK_BLOCK,
            recipients=tuple(address.strip() for address in recipients if address.strip()),
            sender=ALERT_FROM.read(),
            timeout_seconds=float(ALERT_TIMEOUT_SECONDS.read() or DEFAULT_TIMEOUT_SECONDS),
        )


# --- Delivery ----------------------------------------------------------------------------


def _load_block(block_type: Any, name: str, how_to_create: str) -> Any:
    try:
        return block_type.load(name)
    except ValueError:
        raise AlertNotSent(f"no {block_type.__name__} block named '{name}'. {how_to_create}") from None


def send_email(alert: Alert, settings: AlertSettings) -> None:
    from prefect_email import EmailServerCredentials, email_send_message

    if not settings.recipients:
        raise AlertNotSent(
            f"no recipients: set {ALERT_EMAILS}=ops@example.org,... or the flow parameter alert_emails."
        )
    credentials = _load_block(
        EmailServerCredentials,
        settings.email_block,
        "Create it with `python deployments/create_blocks.py` (HOSPITALDB_SMTP_* variables, see README 'Alerts').",
    )
    # email_send_message is an async task; .fn is the coroutine function itself. Awaiting it
    # here is what makes the mail go out.
    asyncio.run(
        email_send_message.fn(
            subject=alert.subject,
            msg=f"<pre>{html.escape(alert.body)}</pre>",
            msg_plain=alert.body,
            email_server_credentials=credentials,
            email_from=settings.sender or credentials.username or "hospitaldb-refresh@localhost",
            email_to=list(settings.recipients),
        )
    )


def send_slack(alert: Alert, settings: AlertSettings) -> None:
    from prefect_slack import SlackWebhook

    webhook = _load_block(
        SlackWebhook,
        settings.slack_block,
        "Slack is optional; to use it, set HOSPITALDB_SLACK_WEBHOOK_URL and run "
        "`python deployments/create_blocks.py`.",
    )
    # The synchronous notify raises on HTTP >= 400 (the async message task would not).
    webhook.notify(body=alert.body, subject=alert.subject)


CHANNELS: dict[str, Callable[[Alert, AlertSettings], None]] = {"email": send_email, "slack": send_slack}


def _in_thread_with_timeout(send: Callable[[], None], timeout: float) -> BaseException | None:
    """Run send in a daemon thread; return its error, or TimeoutError if it did not finish."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            send()
            outcome.append(None)
        except BaseException as error:  # reported to the caller, never raised into the hook
            outcome.append(error)

    thread = threading.Thread(target=target, name="hospitaldb-alert", daemon=True)
    thread.start()
    thread.join(timeout)
    if not outcome:
        return TimeoutError(f"no answer within {timeout:g} s")
    return outcome[0]


def deliver(
    alert: Alert,
    settings: AlertSettings,
    logger: logging.Logger | logging.LoggerAdapter,
    channels: dict[str, Callable[[Alert, AlertSettings], None]] = CHANNELS,
) -> dict[str, bool]:
    """Send the alert on every channel; log each outcome; never raise."""
    delivered = {}
    for name, send in channels.items():
        error = _in_thread_with_timeout(lambda send=send: send(alert, settings), settings.timeout_seconds)
        delivered[name] = error is None
        if error is None:
            logger.info("%s alert sent: %s", name, alert.subject)
        elif isinstance(error, AlertNotSent):
            logger.warning("%s alert not sent: %s", name, safe(str(error), ERROR_LENGTH))
        else:
            logger.error("%s alert not sent: %s: %s", name, type(error).__name__, safe(str(error), 300))
    return delivered
