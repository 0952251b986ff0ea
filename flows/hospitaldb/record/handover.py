"""The run's outcome, handed over with the flow's final state: no registry of runs.

The refresh flow returns its steps with the outcome (ReturnedSteps), or ends with one typed
exception that carries it (RunFailed); a cancel or a crash, which Prefect must see as it
is, carries it as an attribute. The state hooks and the command line, in the run's own
process, read it from the state (`outcome_in`). A hook in another process (a worker's,
after the run's process is gone) finds none and reads the run back from etl_audit.
"""

from __future__ import annotations

from typing import Any

import psycopg2

from hospitaldb.engine.db.errors import DatabaseError, RefreshError
from hospitaldb.record.outcome import RunOutcome

HANDED_OVER = "hospitaldb_run_outcome"  # the attribute that carries the outcome on a cancel or a crash


class ReturnedSteps(list[dict[str, Any]]):
    """What the refresh flow returns: a dict per step (as `state.result()` always gave), with the outcome."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__(step.to_dict() for step in outcome.steps)
        self.outcome = outcome


class RunFailed(RefreshError):
    """How a run that did not complete ends its flow: the error as it may be shown, and the run's outcome.

    Every error that ends a run leaves the flow as this one type: ours as raised (safe by
    construction), a driver's error through the allowlist, anything else as the record has it.
    """

    def __init__(self, outcome: RunOutcome, error: Exception) -> None:
        self.outcome = outcome
        self.status, self.step, self.sqlstate = outcome.status, outcome.step, outcome.sqlstate
        if isinstance(error, RefreshError):
            shown = str(error)
        elif isinstance(error, psycopg2.Error):  # outside any step (a bug if it happens): never its DETAIL
            shown = str(DatabaseError(error))
        else:
            shown = outcome.error or type(error).__name__
        super().__init__(shown)


def handed_over(error: BaseException, outcome: RunOutcome) -> BaseException:
    """A cancel or a crash (Prefect must see it as it is), carrying the run's outcome out of the flow."""
    try:
        setattr(error, HANDED_OVER, outcome)
    except AttributeError:  # an error that takes no attribute: the readers fall back to etl_audit
        pass
    return error


def outcome_in(state: Any) -> RunOutcome | None:
    """The outcome a run's body handed over with its final state, in the process that ran it; else None.

    None for a run whose body never ran or ended elsewhere (a worker's hook after the run's
    process is gone): the caller reads the run back from etl_audit.
    """
    try:
        value = state.result(raise_on_failure=False)
    except Exception:  # a result this process does not hold (persisted elsewhere, or none)
        return None
    if isinstance(value, ReturnedSteps | RunFailed):
        return value.outcome
    outcome = getattr(value, HANDED_OVER, None)
    return outcome if isinstance(outcome, RunOutcome) else None
