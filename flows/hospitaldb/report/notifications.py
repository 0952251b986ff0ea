"""Delivery of alerts and notices to a list of Prefect blocks: email, Slack, or any notification block.

Alerts go to every block in the run's list of channels, each named as Prefect names a block,
`<block-type-slug>/<block-name>`: `email-server-credentials/hospitaldb-email`,
`slack-incoming-webhook/hospitaldb-slack`, `ms-teams-webhook/oncall`, `pager-duty-webhook/dba`,
`custom-webhook/pager`... Each is a Channel, told with `notify(alert)`: an `EmailServerCredentials`
block mails the run's recipients (EmailChannel, over prefect-email); any other block must be a
Prefect `NotificationBlock` (BlockChannel, over its `notify(body, subject)`). The list comes
from the flow parameter `alert_blocks`, else `HOSPITALDB_ALERT_BLOCKS`, else the email and Slack
blocks the parameters `email_block` and `slack_block` name.

The state hooks (hospitaldb.report.hooks) send one message per run, never one per attempt
or per task. Each channel is sent in its own thread with a time limit, so a dead SMTP server
or a hanging webhook costs a logged error, never the run's own state.

Two traps, handled here: prefect-email's message task is async (called from a sync hook it
returns an un-awaited coroutine and sends nothing), so we await it ourselves; and Prefect's
Apprise-based blocks (Teams, PagerDuty, Opsgenie, ...) swallow a failed delivery unless
asked to raise, so a notice that did not arrive would be logged as sent.
"""

from __future__ import annotations

import asyncio
import html
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from hospitaldb.api_channel import before_loading
from hospitaldb.settings import ALERT_BLOCKS, ALERT_EMAILS, ALERT_FROM, ALERT_TIMEOUT_SECONDS
from hospitaldb.text import safe, without_url_paths

DEFAULT_EMAIL_BLOCK = "hospitaldb-email"
DEFAULT_SLACK_BLOCK = "hospitaldb-slack"
EMAIL_BLOCK_TYPE = "email-server-credentials"
SLACK_BLOCK_TYPE = "slack-incoming-webhook"
DEFAULT_TIMEOUT_SECONDS = 20.0
ERROR_LENGTH = 700
HOW_TO_CREATE = (
    "Create it with `python deployments/create_blocks.py` (docs/alerts.md), in the Prefect UI "
    "(Blocks), or name another: `prefect block ls` lists them"
)


@dataclass(frozen=True)
class Alert:
    """What every channel is told: a subject and a plain-text body (report.telling renders them)."""

    subject: str
    body: str


class AlertNotSent(RuntimeError):
    """A channel could not deliver; the message says why and what to do."""


def split_list(text: str | None) -> list[str]:
    """A comma- or semicolon-separated setting as a list, blanks dropped."""
    return [item.strip() for item in (text or "").replace(";", ",").split(",") if item.strip()]


def default_channels(
    email_block: str = DEFAULT_EMAIL_BLOCK, slack_block: str = DEFAULT_SLACK_BLOCK
) -> tuple[str, ...]:
    return (f"{EMAIL_BLOCK_TYPE}/{email_block}", f"{SLACK_BLOCK_TYPE}/{slack_block}")


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go: read at run time from the run's parameters and the environment."""

    channels: tuple[str, ...] = field(default_factory=default_channels)
    recipients: tuple[str, ...] = ()
    sender: str | None = None
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    # The channels' blocks, loaded ahead (`resolved`): their secrets in this process's memory only.
    blocks: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def resolved(self, logger: logging.Logger | logging.LoggerAdapter) -> AlertSettings:
        """These settings with every channel's block loaded now, while the Prefect API answers.

        A run resolves its channels as it starts, so that its alert goes out from its own
        process even if the API is down when it fails. A channel that cannot be loaded now
        is tried again when there is something to send.
        """
        blocks = {}
        for channel in self.channels:
            try:
                blocks[channel] = load_channel(channel)
            except AlertNotSent:
                # No such block (the local demo has none): an alert to it would say so, with how to fix.
                logger.info("alert channel %s: no such block; an alert would not reach it", channel)
            except Exception as error:  # the API not answering: tried again at delivery
                logger.warning("alert channel %s not loaded yet: %s", channel, type(error).__name__)
        return replace(self, blocks=blocks)

    @classmethod
    def for_run(cls, flow_run: Any) -> AlertSettings:
        return cls.from_parameters(getattr(flow_run, "parameters", None) or {})

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> AlertSettings:
        channels = (
            parameters.get("alert_blocks")
            or split_list(ALERT_BLOCKS.read())
            or default_channels(
                parameters.get("email_block") or DEFAULT_EMAIL_BLOCK,
                parameters.get("slack_block") or DEFAULT_SLACK_BLOCK,
            )
        )
        recipients = parameters.get("alert_emails") or split_list(ALERT_EMAILS.read())
        return cls(
            channels=tuple(dict.fromkeys(channel.strip() for channel in channels if channel.strip())),
            recipients=tuple(address.strip() for address in recipients if address.strip()),
            sender=ALERT_FROM.read(),
            timeout_seconds=float(ALERT_TIMEOUT_SECONDS.read() or DEFAULT_TIMEOUT_SECONDS),
        )


# --- Delivery ----------------------------------------------------------------------------


def load_channel(reference: str) -> Any:
    """The block a channel names; AlertNotSent saying how to fix a bad or missing one."""
    from prefect.blocks.core import Block

    block_type, _, name = reference.partition("/")
    if not block_type or not name:
        raise AlertNotSent(
            f"'{reference}' is not a block reference: write <block-type-slug>/<block-name>, "
            f"e.g. {SLACK_BLOCK_TYPE}/{DEFAULT_SLACK_BLOCK} (`prefect block ls` lists them)"
        )
    before_loading(reference, AlertNotSent)
    try:
        return Block.load(reference)
    except (ValueError, KeyError):
        raise AlertNotSent(f"no block '{reference}'. {HOW_TO_CREATE}.") from None


class Channel(Protocol):
    """Where an alert can go: every channel, email included, is told the same way."""

    def notify(self, alert: Alert) -> None:
        """Deliver the alert, or raise saying why not."""


@dataclass(frozen=True)
class EmailChannel:
    """An EmailServerCredentials block as a channel: the alert mailed to the run's recipients."""

    credentials: Any
    recipients: tuple[str, ...]
    sender: str | None = None

    def notify(self, alert: Alert) -> None:
        from prefect_email import email_send_message

        if not self.recipients:
            raise AlertNotSent(
                f"no recipients: set {ALERT_EMAILS}=ops@example.org,... or the flow parameter alert_emails."
            )
        # email_send_message is an async task; .fn is the coroutine function itself. Awaiting it
        # here is what makes the mail go out.
        asyncio.run(
            email_send_message.fn(
                subject=alert.subject,
                msg=f"<pre>{html.escape(alert.body)}</pre>",
                msg_plain=alert.body,
                email_server_credentials=self.credentials,
                email_from=self.sender or self.credentials.username or "hospitaldb-refresh@localhost",
                email_to=list(self.recipients),
            )
        )


@dataclass(frozen=True)
class BlockChannel:
    """Any Prefect notification block (Slack, Microsoft Teams, PagerDuty, Opsgenie, custom webhook...)."""

    block: Any

    def notify(self, alert: Alert) -> None:
        # Apprise-based blocks report a failed delivery only when asked to raise.
        with self.block.raise_on_failure():
            self.block.notify(body=alert.body, subject=alert.subject)


def channel_for(block: Any, settings: AlertSettings) -> Channel:
    """The channel a loaded block is; AlertNotSent for a block that cannot send."""
    from prefect.blocks.abstract import NotificationBlock

    if block.get_block_type_slug() == EMAIL_BLOCK_TYPE:
        return EmailChannel(block, settings.recipients, settings.sender)
    if not isinstance(block, NotificationBlock):
        raise AlertNotSent(
            f"a {type(block).__name__} block cannot send notices: name an EmailServerCredentials block "
            "or a notification block (Slack, Microsoft Teams, PagerDuty, Opsgenie, custom webhook...)"
        )
    return BlockChannel(block)


def send(alert: Alert, channel: str, settings: AlertSettings) -> None:
    """Deliver the alert to one channel, or raise saying why not."""
    channel_for(settings.blocks.get(channel) or load_channel(channel), settings).notify(alert)


class _Sending(threading.Thread):
    """One channel's delivery, in a daemon thread: a hung channel is abandoned, not waited for."""

    def __init__(self, send: Callable[[], None]) -> None:
        super().__init__(name="hospitaldb-alert", daemon=True)
        self.send = send
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.send()
        except BaseException as error:  # reported to the caller, never raised into the hook
            self.error = error


def deliver(
    alert: Alert,
    settings: AlertSettings,
    logger: logging.Logger | logging.LoggerAdapter,
    send: Callable[[Alert, str, AlertSettings], None] = send,
) -> dict[str, bool]:
    """Send the alert to every channel at once, each within the time limit; log each outcome; never raise.

    At once, because a crashed run's hook has 30 s before SIGKILL, however many channels hang.
    """
    if not settings.channels:
        logger.warning("alert not sent: no alert channels (alert_blocks, %s)", ALERT_BLOCKS)
    sendings = {
        channel: _Sending(lambda channel=channel: send(alert, channel, settings))
        for channel in settings.channels
    }
    deadline = time.monotonic() + settings.timeout_seconds
    for sending in sendings.values():
        sending.start()
    delivered = {}
    for channel, sending in sendings.items():
        sending.join(max(0.0, deadline - time.monotonic()))
        error = (
            TimeoutError(f"no answer within {settings.timeout_seconds:g} s")
            if sending.is_alive()
            else sending.error
        )
        delivered[channel] = error is None
        if error is None:
            logger.info("alert sent to %s: %s", channel, alert.subject)
        elif isinstance(error, AlertNotSent):
            logger.warning("alert not sent to %s: %s", channel, safe(str(error), ERROR_LENGTH))
        else:
            # A delivery error may quote the service's URL, and its key with it (Teams' sig=, a token).
            why = safe(without_url_paths(str(error)), 300)
            logger.error("alert not sent to %s: %s: %s", channel, type(error).__name__, why)
    return delivered
