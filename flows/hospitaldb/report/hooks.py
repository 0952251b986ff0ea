"""The flows' state hooks: one alert or notice per run, each read from the run's record.

- `report_failure` (on_failure): the alert, rendered from the outcome the flow recorded.
- `report_interruption` (on_crashed, on_cancellation): the run is noted cancelled or
  crashed at the step in progress, the alert goes out, and only then is the record
  written (a crash leaves 30 s before SIGKILL: the alert must not wait on the
  database). Writing is idempotent: the flow has already written a cancel.
- `report_recovery` (on_completion): a short notice when the run of the same database
  that finished before this one had failed, as etl_audit records it, not as Prefect's
  list of runs has it: one deployment may refresh several databases.

Nothing here reads a task run's name, a state's message or an error's words.
"""

from __future__ import annotations

from typing import Any

from hospitaldb.engine.database import Limits, resolve_database
from hospitaldb.engine.errors import RefreshError, RunStatus
from hospitaldb.record.alerts import describe_failure, describe_recovery
from hospitaldb.record.audit_history import load_outcome
from hospitaldb.record.notifications import AlertSettings, deliver
from hospitaldb.record.outcome import RunOutcome
from hospitaldb.record.recorder import RunRecorder

LIMIT_PARAMETERS = ("statement_timeout_seconds", "lock_timeout_seconds")


def recorder_of(flow: Any, flow_run: Any) -> RunRecorder:
    """This process's record of the run, else the one in etl_audit.

    With a worker, the hooks of a cancelled or killed run run in the worker's own process,
    after the run's process is gone: they read the run back from the database. A run that
    recorded nothing (no database, a dry run, another flow) gets an outcome that says only
    what Prefect knows: its name and state.
    """
    from prefect.logging.loggers import flow_run_logger

    found = RunRecorder.of_run_id(flow_run.id)
    if found is not None:
        return found
    parameters = flow_run.parameters or {}
    outcome = RunOutcome(flow.name, str(flow_run.id), flow_run.name, dry_run=bool(parameters.get("dry_run")))
    recorder = RunRecorder(outcome, flow_run_logger(flow_run=flow_run, flow=flow))
    if outcome.dry_run:
        return recorder
    try:
        target = resolve_database(parameters.get("database_block"))
    except RefreshError as error:
        recorder.logger.warning("the run's record in etl_audit cannot be read: %s", error)
        return recorder
    # The run's own limits, as far as its parameters say (the audit caps them at 10 s anyway).
    recorder.use_database(target, Limits(*(parameters.get(name, 0) for name in LIMIT_PARAMETERS)))
    recorded = load_outcome(recorder.audit, outcome.flow_run_id, flow.name) if recorder.audit else None
    if recorded is not None:
        recorder.outcome = recorded
    return recorder


def _run_link(flow_run: Any) -> str | None:
    from prefect.utilities.urls import url_for

    try:
        return url_for(flow_run)
    except Exception:
        return None


def _alert(recorder: RunRecorder, flow_run: Any, state: Any) -> None:
    alert = describe_failure(recorder.outcome, state.name, _run_link(flow_run))
    deliver(alert, AlertSettings.for_run(flow_run), recorder.logger)


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure: one alert for the run."""
    _alert(recorder_of(flow, flow_run), flow_run, state)


def report_interruption(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed and on_cancellation: note it, alert, then write it."""
    recorder = recorder_of(flow, flow_run)
    status = RunStatus.CANCELLED if state.is_cancelled() or state.is_cancelling() else RunStatus.CRASHED
    recorder.interrupted(status, write=False)
    _alert(recorder, flow_run, state)
    try:
        recorder.interrupted(status)
    finally:
        recorder.close()


def report_recovery(flow: Any, flow_run: Any, state: Any) -> None:
    """on_completion: a short notice when this database's previous finished run had failed."""
    recorder = RunRecorder.of_run_id(flow_run.id)  # completion hooks run in the run's own process
    previous = recorder.outcome.previous if recorder else None
    if previous is not None and previous.status.is_failure:
        deliver(
            describe_recovery(recorder.outcome, _run_link(flow_run)),
            AlertSettings.for_run(flow_run),
            recorder.logger,
        )
