"""Telling how a run ended, from the run's own process: an alert when it failed, a notice when it recovered.

A run resolves its alert channels as it starts (`RunTeller.for_this_run`: the blocks are
loaded while the Prefect API answers, their secrets kept in memory only) and tells its end
as its body ends (hospitaldb.record.recorder.recording), before Prefect hears of it. So a
failure is told within seconds even when the Prefect server is down at that moment, when
no state hook would ever run. The hooks (hospitaldb.report.hooks) tell only what the run
could not: a run killed outright, or refused before its body ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hospitaldb.record.outcome import Notice, RunOutcome
from hospitaldb.record.recorder import Logger
from hospitaldb.report.alerts import Alert, describe_failure, describe_recovery
from hospitaldb.report.notifications import AlertSettings, deliver
from hospitaldb.statuses import RunStatus

# The name of the state Prefect gives a run that ended so (an exception ends a run Failed).
STATE_NAMES = {RunStatus.CANCELLED: "Cancelled", RunStatus.CRASHED: "Crashed"}


def message_for(
    outcome: RunOutcome, run_link: str | None, state_name: str | None = None
) -> tuple[str, Alert] | None:
    """What a run's end is told with: ('alert', ...) for a failure, ('recovery', ...) for the first good run after one."""
    if outcome.status == RunStatus.COMPLETED:
        previous = outcome.previous
        if previous is None or not previous.status.is_failure:
            return None
        return "recovery", describe_recovery(outcome, run_link)
    return "alert", describe_failure(
        outcome, state_name or STATE_NAMES.get(outcome.status, "Failed"), run_link
    )


def run_link(flow_run_id: Any) -> str | None:
    """The run's page in the Prefect UI, from the settings alone (no API call); None when none is set."""
    from prefect.utilities.urls import url_for

    try:
        return url_for("flow-run", obj_id=flow_run_id) if flow_run_id else None
    except Exception:
        return None


def tell(
    outcome: RunOutcome,
    settings: AlertSettings,
    logger: Logger,
    run_link: str | None,
    *,
    state_name: str | None = None,
    sent_by: str = "run",
) -> Notice | None:
    """Deliver the run's alert or notice to every channel: the Notice of it (which channels took it), once tried.

    Tried once, by whoever comes first: a channel that failed is logged with why, not tried
    again by a hook (a crashed run's hook has 30 s before SIGKILL, a hung channel 20 of them).
    """
    message = message_for(outcome, run_link, state_name)
    if message is None:
        return None
    kind, alert = message
    delivered = deliver(alert, settings, logger)
    return Notice(kind, tuple(channel for channel, arrived in delivered.items() if arrived), sent_by)


@dataclass(frozen=True)
class RunTeller:
    """A run's alert channels, resolved as it starts; called with its outcome as it ends."""

    settings: AlertSettings
    run_link: str | None = None

    @classmethod
    def for_this_run(cls, logger: Logger) -> RunTeller:
        """The channels of the flow run in progress (its parameters and the environment), loaded now."""
        from prefect import runtime

        settings = AlertSettings.from_parameters(runtime.flow_run.parameters or {})
        return cls(settings.resolved(logger), run_link(runtime.flow_run.id))

    def __call__(self, outcome: RunOutcome, logger: Logger) -> Notice | None:
        return tell(outcome, self.settings, logger, self.run_link)
