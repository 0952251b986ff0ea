"""What a run's end is told with, and who tells it: an alert when it failed, a notice when it recovered.

What an alert says is rendered from the run's recorded outcome, for a person on call, on a
phone: the subject says what ended how and where; the body adds when, after how many
attempts, the error as the run recorded it (which passed the allowlist of
hospitaldb.engine.db.allowlist: never a row value), what that means for the data, and where
to look next. Also the freshness check's alert: data that no refresh has renewed for too long.

Who tells it: the Teller. A run resolves its alert channels as it starts
(`Teller.for_this_run`: the blocks are loaded while the Prefect API answers, their secrets
kept in memory only) and tells its end as its body ends (hospitaldb.record.recorder.recording),
before Prefect hears of it. So a failure is told within seconds even when the Prefect server
is down at that moment, when no state hook would ever run. The hooks (hospitaldb.report.hooks)
tell only what the run could not: a run killed outright, or refused before its body ran.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hospitaldb.record.outcome import Notice, RunOutcome
from hospitaldb.record.recorder import Logger
from hospitaldb.report.notifications import Alert, AlertSettings, deliver
from hospitaldb.statuses import RunStatus
from hospitaldb.text import in_utc, redact, safe

CONSEQUENCES = {
    RunStatus.CANCELLED: (
        "The run was cancelled (from the Prefect UI, the CLI or an automation). The step in progress was "
        "rolled back: its tables keep the previous refresh's data, and later steps did not run. Re-run the "
        "deployment when ready."
    ),
    RunStatus.CRASHED: (
        "The run was killed. The step in progress was rolled back by PostgreSQL; tables keep the previous "
        "refresh's data. Check the worker and host (memory, restarts), then re-run."
    ),
    RunStatus.SOURCES_REFUSED: (
        "Nothing was refreshed: every table keeps the previous refresh's data. Fix the upstream load and "
        "re-run; for a deliberate reload, run with skip_source_checks."
    ),
    RunStatus.REFUSED: (
        "Nothing was refreshed: every table keeps the previous refresh's data. Fix what the error names "
        "(`python tools/validate.py` checks the SQL offline), then re-run."
    ),
    RunStatus.CHECK_FAILED: (
        "The step was rolled back before it published anything: its tables keep the previous refresh's "
        "data, and later steps did not run. Run the check's file to see the rows it finds, fix the data "
        "upstream, then re-run."
    ),
}
FAILED_STEP = (
    "The failed step was rolled back: its tables keep the previous refresh's data, and later steps did not "
    "run. Fix the cause, then re-run the deployment."
)


def _field_lines(fields: list[tuple[str, str | None]]) -> str:
    return "\n".join(f"{(label + ':').ljust(12)} {value}" for label, value in fields if value)


def _held_back_lines(outcome: RunOutcome) -> list[str]:
    """Which objects keep yesterday's data, and why: what the dashboards' readers will see."""
    if not outcome.held_back:
        return []
    width = max(len(held.object_name) for held in outcome.held_back)
    return [
        "",
        f"Held back ({len(outcome.held_back)}, keep their previous data):",
        *(f"  {held.object_name.ljust(width)}  {held.reason}" for held in outcome.held_back),
    ]


def describe_failure(outcome: RunOutcome, state_name: str, run_link: str | None) -> Alert:
    """The alert for a run that failed, was refused, crashed or was cancelled."""
    what = outcome.what
    if outcome.status in (RunStatus.RUNNING, RunStatus.COMPLETED):  # a failed state the run did not record
        outcome = replace(outcome, status=RunStatus.FAILED)
    when = (outcome.finished_at or datetime.now(UTC)).astimezone(UTC)
    failed_checks = ", ".join(f"{check.name} ({check.source})" for check in outcome.failed_checks)
    body = "\n".join(
        [
            f"HospitalDB {outcome.title(what.lower())}.",
            "",
            _field_lines(
                [
                    ("Flow", outcome.flow_name),
                    ("Run", f"{outcome.flow_run_name} ({outcome.flow_run_id})"),
                    ("Database", outcome.database),
                    ("Failed step", outcome.step or "none (before the first step)"),
                    ("Attempts", str(outcome.attempts) if outcome.attempts else None),
                    ("When", in_utc(when, seconds=True)),
                    ("State", state_name),
                    ("Error", outcome.error or "not recorded: see the run's logs"),
                    ("Checks", failed_checks or None),
                    ("Run page", run_link),
                    ("Logs", f"prefect flow-run logs {outcome.flow_run_id}  (or the run page's Logs tab)"),
                ]
            ),
            "",
            CONSEQUENCES.get(outcome.status, FAILED_STEP),
            *_held_back_lines(outcome),
        ]
    )
    return Alert(subject=safe(f"[HospitalDB] {outcome.title(what, shout=True)}", 200), body=redact(body))


def describe_recovery(outcome: RunOutcome, run_link: str | None) -> Alert:
    """The notice for the first good run after a failed one of the same database (outcome.previous)."""
    previous = outcome.previous
    ended = f"{previous.name} ended {previous.status.value}" if previous else "unknown"
    if previous and previous.finished_at:
        ended += f" at {in_utc(previous.finished_at)}"
    body = _field_lines(
        [
            ("Flow", outcome.flow_name),
            ("Run", f"{outcome.flow_run_name} ({outcome.flow_run_id}) completed"),
            ("Database", outcome.database),
            ("Previous run", ended),
            ("Run page", run_link),
        ]
    )
    return Alert(
        subject="[HospitalDB] Refresh recovered",
        body=redact(f"HospitalDB refresh is healthy again: all selected steps completed.\n\n{body}"),
    )


def describe_staleness(stale: list[dict[str, Any]], max_age_hours: float) -> Alert:
    oldest = max((row["hours_ago"] for row in stale if row["hours_ago"] is not None), default=None)
    headline = (
        f"no successful refresh for {oldest:.0f} h"
        if oldest is not None
        else "no successful refresh recorded"
    )
    lines = [
        f"HospitalDB data is stale: {headline} (threshold {max_age_hours:g} h).",
        "",
        *(
            f"{row['step']:<36}last success: "
            + (
                f"{in_utc(row['last_success'])} ({row['hours_ago']} h ago)"
                if row["last_success"]
                else "never"
            )
            for row in stale
        ),
        "",
        "Dashboards still show the last refreshed data. Check that the nightly deployment is not paused, "
        "that a worker is running for its pool, and the last runs' logs (docs/monitoring.md).",
    ]
    return Alert(subject=f"[HospitalDB] Data is stale: {headline}", body="\n".join(lines))


# The name of the state Prefect gives a run that ended so (an exception ends a run Failed).
STATE_NAMES = {RunStatus.CANCELLED: "Cancelled", RunStatus.CRASHED: "Crashed"}


def run_link(flow_run_id: Any) -> str | None:
    """The run's page in the Prefect UI, from the settings alone (no API call); None when none is set."""
    from prefect.utilities.urls import url_for

    try:
        return url_for("flow-run", obj_id=flow_run_id) if flow_run_id else None
    except Exception:
        return None


@dataclass(frozen=True)
class Teller:
    """How a run's end is told, and to whom: its channels, its page in the UI, and who tells it.

    The one teller of the package: the run's own (`for_this_run`), a state hook's
    (`for_flow_run`) and the freshness check's. Called with the outcome, it chooses the
    message (an alert for a failure, a notice for the first good run after one), delivers it
    to every channel and returns the Notice of it, for the record.
    """

    settings: AlertSettings
    run_link: str | None = None
    sent_by: str = "run"  # 'run': its own process, as it ended; 'hook': a state hook, after it
    state_name: str | None = None  # the Prefect state a hook saw (else named from the outcome)

    @classmethod
    def for_this_run(cls, logger: Logger) -> Teller:
        """The channels of the flow run in progress (its parameters and the environment), loaded now."""
        from prefect import runtime

        settings = AlertSettings.from_parameters(runtime.flow_run.parameters or {})
        return cls(settings.resolved(logger), run_link(runtime.flow_run.id))

    @classmethod
    def for_flow_run(cls, flow_run: Any, state: Any) -> Teller:
        """A state hook's teller: the run's channels, loaded when there is something to send."""
        return cls(AlertSettings.for_run(flow_run), run_link(flow_run.id), "hook", state.name)

    def message(self, outcome: RunOutcome) -> tuple[str, Alert] | None:
        """('alert', ...) for a failure, ('recovery', ...) for the first good run after one; else None."""
        if outcome.status == RunStatus.COMPLETED:
            previous = outcome.previous
            if previous is None or not previous.status.is_failure:
                return None
            return "recovery", describe_recovery(outcome, self.run_link)
        state = self.state_name or STATE_NAMES.get(outcome.status, "Failed")
        return "alert", describe_failure(outcome, state, self.run_link)

    def __call__(self, outcome: RunOutcome, logger: Logger) -> Notice | None:
        """Deliver the run's alert or notice to every channel: the Notice of it (which channels took it), once tried.

        Tried once, by whoever comes first: a channel that failed is logged with why, not tried
        again by a hook (a crashed run's hook has 30 s before SIGKILL, a hung channel 20 of them).
        """
        message = self.message(outcome)
        if message is None:
            return None
        kind, alert = message
        delivered = deliver(alert, self.settings, logger)
        return Notice(kind, tuple(channel for channel, arrived in delivered.items() if arrived), self.sent_by)

    def send(self, alert: Alert, logger: Logger) -> bool:
        """Deliver an alert that is not a run's end (the freshness check's); True if a channel took it."""
        return any(deliver(alert, self.settings, logger).values())
