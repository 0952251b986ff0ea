"""Failure alerts and recovery notices, by email (default) and Slack (optional).

The flow's state hooks call `send_failure_alert` (on_failure and on_crashed) and
`send_recovery_notice` (on_completion): one message per run, never one per
attempt or per task. Delivery goes through the prefect-email
`EmailServerCredentials` and prefect-slack `SlackWebhook` blocks, each channel
in its own thread with a time limit, so a dead SMTP server or a hanging webhook
costs a logged error, never the run's own state.

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
from datetime import UTC, datetime
from typing import Any

from hospitaldb.settings import ALERT_EMAILS, ALERT_FROM, ALERT_TIMEOUT_SECONDS
from hospitaldb.text import in_utc, redact, safe

DEFAULT_EMAIL_BLOCK = "hospitaldb-email"
DEFAULT_SLACK_BLOCK = "hospitaldb-slack"
DEFAULT_TIMEOUT_SECONDS = 20.0
ERROR_LENGTH = 700


class AlertNotSent(RuntimeError):
    """A channel could not deliver; the message says why and what to do."""


@dataclass(frozen=True)
class Alert:
    subject: str
    body: str


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


# --- What an alert says ------------------------------------------------------------------


@dataclass(frozen=True)
class StepAttempt:
    step: str
    attempts: int


def _last_unfinished_step(flow_run_id: Any) -> StepAttempt | None:
    """The step the run was in when it failed or crashed, and how many attempts it had."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    unfinished = [run for run in runs if not (run.state and run.state.is_completed())]
    if not unfinished:
        return None
    latest = max(
        unfinished, key=lambda run: run.start_time or run.created or datetime.min.replace(tzinfo=UTC)
    )
    return StepAttempt(step=latest.name.rsplit("-", 1)[0], attempts=max(latest.run_count, 1))


def _exception_of(state: Any) -> BaseException | None:
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result may be unavailable (crash, no persisted result)
        return None
    return error if isinstance(error, BaseException) else None


def _error_of(state: Any) -> str:
    error = _exception_of(state)
    text = str(error) if error is not None and str(error) else (state.message or state.name)
    return safe(text, ERROR_LENGTH)


def _run_link(flow_run: Any) -> str | None:
    from prefect.utilities.urls import url_for

    try:
        return url_for(flow_run)
    except Exception:
        return None


def _field_lines(fields: list[tuple[str, str | None]]) -> str:
    return "\n".join(f"{label + ':':<13}{value}" for label, value in fields if value)


def describe_failure(flow: Any, flow_run: Any, state: Any) -> Alert:
    """The alert for a failed or crashed run: what, where, when, how many attempts, where to look."""
    crashed = state.is_crashed()
    cancelled = state.is_cancelled() or state.is_cancelling()
    try:
        step = _last_unfinished_step(flow_run.id)
    except Exception:
        step = None
    where = f" at {step.step}" if step else ""
    verb = "CANCELLED" if cancelled else "CRASHED" if crashed else "FAILED"
    when = (getattr(state, "timestamp", None) or datetime.now(UTC)).astimezone(UTC)
    error = _exception_of(state)
    if cancelled:
        consequence = (
            "The run was cancelled (from the Prefect UI, the CLI or an automation). The step in "
            "progress was rolled back: its tables keep the previous refresh's data, and later steps "
            "did not run. Re-run the deployment when ready."
        )
    elif crashed:
        consequence = (
            "The run was killed. The step in progress was rolled back by PostgreSQL; tables keep the "
            "previous refresh's data. Check the worker and host (memory, restarts), then re-run."
        )
    elif getattr(error, "problems", None):
        consequence = (
            "Nothing was refreshed: every table keeps the previous refresh's data. Fix the upstream "
            "load and re-run; for a deliberate reload, run with skip_source_checks."
        )
    else:
        consequence = (
            "The failed step was rolled back: its tables keep the previous refresh's data, and later "
            "steps did not run. Fix the cause, then re-run the deployment."
        )
    what = "Refresh" if flow.name == "hospitaldb-refresh" else flow.name
    body = "\n".join(
        [
            f"HospitalDB {what.lower()} {verb.lower()}{where}.",
            "",
            _field_lines(
                [
                    ("Flow", flow.name),
                    ("Run", f"{flow_run.name} ({flow_run.id})"),
                    ("Failed step", step.step if step else "none (before the first step)"),
                    ("Attempts", str(step.attempts) if step else None),
                    ("When", in_utc(when, seconds=True)),
                    ("State", state.name),
                    ("Error", _error_of(state)),
                    ("Run page", _run_link(flow_run)),
                    ("Logs", f"prefect flow-run logs {flow_run.id}  (or the run page's Logs tab)"),
                ]
            ),
            "",
            consequence,
        ]
    )
    # A failed check or source check says what failed in the subject, for the phone's lock screen.
    headline = getattr(error, "alert_headline", None)
    subject = f"[HospitalDB] {what} {verb}{where}" + (f": {headline}" if headline else "")
    return Alert(subject=safe(subject, 200), body=redact(body))


def describe_recovery(flow: Any, flow_run: Any, previous: Any) -> Alert:
    previous_when = previous.end_time or previous.start_time
    body = _field_lines(
        [
            ("Flow", flow.name),
            ("Run", f"{flow_run.name} ({flow_run.id}) completed"),
            (
                "Previous run",
                f"{previous.name} ended {previous.state.name if previous.state else 'failed'}"
                + (f" at {in_utc(previous_when)}" if previous_when else ""),
            ),
            ("Run page", _run_link(flow_run)),
        ]
    )
    return Alert(
        subject="[HospitalDB] Refresh recovered",
        body=redact(f"HospitalDB refresh is healthy again: all selected steps completed.\n\n{body}"),
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


# --- Hooks -------------------------------------------------------------------------------


def _logger(flow: Any, flow_run: Any) -> logging.LoggerAdapter:
    from prefect.logging.loggers import flow_run_logger

    return flow_run_logger(flow_run=flow_run, flow=flow)


def send_failure_alert(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure, on_crashed and on_cancellation hook: one alert (or notice) for the run."""
    logger = _logger(flow, flow_run)
    deliver(describe_failure(flow, flow_run, state), AlertSettings.for_run(flow_run), logger)


def _previous_finished_run(flow_run: Any) -> Any | None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowFilter,
        FlowFilterId,
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    deployment_filter = (
        DeploymentFilter(id=DeploymentFilterId(any_=[flow_run.deployment_id]))
        if flow_run.deployment_id
        else None
    )
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(id=FlowFilterId(any_=[flow_run.flow_id])),
            deployment_filter=deployment_filter,
            flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(not_any_=[flow_run.id]),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[StateType.COMPLETED, StateType.FAILED, StateType.CRASHED]
                    )
                ),
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    return runs[0] if runs else None


def send_recovery_notice(flow: Any, flow_run: Any, state: Any) -> None:
    """on_completion hook: a short notice when the previous finished run had failed or crashed."""
    logger = _logger(flow, flow_run)
    try:
        previous = _previous_finished_run(flow_run)
    except Exception as error:
        logger.warning("could not read the previous run to check for a recovery: %s", error)
        return
    if (
        previous is None
        or not previous.state
        or not (previous.state.is_failed() or previous.state.is_crashed())
    ):
        return
    deliver(describe_recovery(flow, flow_run, previous), AlertSettings.for_run(flow_run), logger)
