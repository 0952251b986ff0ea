"""What an alert says: rendered from the run's recorded outcome, for a person on call, on a phone.

Also the freshness check's alert: data that no refresh has renewed for too long.

The subject says what ended how and where; the body adds when, after how many
attempts, the error as the run recorded it (which passed the allowlist of
hospitaldb.engine.allowlist: never a row value), what that means for the data, and where
to look next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from hospitaldb.record.outcome import RunOutcome
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


@dataclass(frozen=True)
class Alert:
    subject: str
    body: str


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
