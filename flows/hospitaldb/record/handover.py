"""The run's outcome, handed over with the flow's final state: no registry of runs.

The flow's return value, or the error it ends with, carries the outcome out of the flow;
the state hooks and the command line, in the run's own process, read it from the state.
A hook in another process (a worker's, after the run's process is gone) finds none and
reads the run back from etl_audit.
"""

from __future__ import annotations

from typing import Any

from hospitaldb.record.outcome import RunOutcome

HANDED_OVER = "hospitaldb_run_outcome"  # the attribute that carries the outcome on the final state's value


class ReturnedSteps(list[dict[str, Any]]):
    """What the refresh flow returns: a dict per step (as `state.result()` always gave), with the outcome."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__(step.to_dict() for step in outcome.steps)
        setattr(self, HANDED_OVER, outcome)


def handed_over(value: Any, outcome: RunOutcome) -> Any:
    """value (a flow's return value, or the error it ends with), carrying the run's outcome out of the flow."""
    try:
        setattr(value, HANDED_OVER, outcome)
    except AttributeError:  # a value that takes no attribute: the readers fall back to etl_audit
        pass
    return value


def outcome_in(state: Any) -> RunOutcome | None:
    """The outcome a run's body handed over with its final state, in the process that ran it; else None.

    None for a run whose body never ran or ended elsewhere (a worker's hook after the run's
    process is gone): the caller reads the run back from etl_audit.
    """
    try:
        value = state.result(raise_on_failure=False)
    except Exception:  # a result this process does not hold (persisted elsewhere, or none)
        return None
    outcome = getattr(value, HANDED_OVER, None)
    return outcome if isinstance(outcome, RunOutcome) else None
