"""The flows' state hooks: what a run could not tell itself, and its record where it could not write it.

A run tells its own end from its own process (hospitaldb.report.telling) and records that
it did (etl_audit.run_notices). A hook tells it only when the run did not: its process was
killed outright (a worker's hook), or it never reached its body.
So a failed run alerts once, whoever sends it.

The outcome comes with the final state, as the run's body handed it over
(hospitaldb.record.outcome.outcome_in); a hook in another process (a worker's, after the
run's process is gone) or of a run whose body never ran reads it from etl_audit by run id.

- `report_failure` (on_failure): the alert, unless told.
- `report_interruption` (on_crashed, on_cancellation): the run is noted cancelled or
  crashed at the step in progress, the alert goes out unless told, and only then is the
  record written (a crash leaves 30 s before SIGKILL: the alert must not wait on the
  database). Writing is idempotent: the flow has already written a cancel.
- `report_recovery` (on_completion): the notice that this database's previous finished
  run had failed, as etl_audit records it, unless told.

Nothing here reads a task run's name, a state's message or an error's words.
"""

from __future__ import annotations

from typing import Any

from hospitaldb.engine.db.database import resolve_database
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.errors import RefreshError
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.record.audit import AuditLog
from hospitaldb.record.audit_history import load_outcome
from hospitaldb.record.handover import outcome_in
from hospitaldb.record.outcome import RunOutcome
from hospitaldb.record.recorder import RunRecorder
from hospitaldb.report.telling import Teller
from hospitaldb.statuses import RunStatus

LIMIT_PARAMETERS = ("statement_timeout_seconds", "lock_timeout_seconds")


def record_of(flow: Any, flow_run: Any, state: Any) -> RunRecorder:
    """The run's outcome, as handed over with its state, else as etl_audit has it; with a writer if it may need one.

    A run that recorded nothing (no database, a dry run, refused before its body ran) gets an
    outcome that says only what Prefect knows: its name and state.
    """
    from prefect.logging.loggers import flow_run_logger

    parameters = flow_run.parameters or {}
    handed = outcome_in(state)
    outcome = handed or RunOutcome(
        flow.name, str(flow_run.id), flow_run.name, dry_run=bool(parameters.get("dry_run"))
    )
    logger = flow_run_logger(flow_run=flow_run, flow=flow)
    # A body that handed its outcome over wrote its ending; once told, there is nothing left to write.
    if outcome.dry_run or (handed is not None and handed.notice is not None):
        return RunRecorder(outcome, logger)
    try:
        target = resolve_database(parameters.get("database_block"))
    except RefreshError as error:
        logger.warning("the run's record in etl_audit cannot be read: %s", error)
        return RunRecorder(outcome, logger)
    # The run's own limits, as far as its parameters say (the audit caps them at 10 s anyway).
    limits = Limits(*(parameters.get(name, 0) for name in LIMIT_PARAMETERS))
    audit = AuditLog(target, logger, SqlFiles(), limits, run_id=str(flow_run.id))
    if handed is None:
        outcome = load_outcome(audit, outcome.flow_run_id, flow.name) or outcome
    return RunRecorder(outcome, logger, audit)


def _tell(recorder: RunRecorder, flow_run: Any, state: Any) -> None:
    """Tell the run's end, unless the run (or another hook) already did; record that it was told."""
    notice = recorder.outcome.notice
    if notice is not None:
        where = ", ".join(notice.channels) or "no channel took it (logged above with why)"
        recorder.logger.info("%s already sent by the %s: %s", notice.kind, notice.sent_by, where)
        return
    recorder.tell(Teller.for_flow_run(flow_run, state))


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """on_failure: one alert for the run, unless the run sent it."""
    recorder = record_of(flow, flow_run, state)
    try:
        _tell(recorder, flow_run, state)
    finally:
        recorder.close()


def report_interruption(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed and on_cancellation: note it, alert unless the run did, then write it."""
    recorder = record_of(flow, flow_run, state)
    status = RunStatus.CANCELLED if state.is_cancelled() or state.is_cancelling() else RunStatus.CRASHED
    recorder.interrupted(status, write=False)
    try:
        _tell(recorder, flow_run, state)
        recorder.interrupted(status)
    finally:
        recorder.close()


def report_recovery(flow: Any, flow_run: Any, state: Any) -> None:
    """on_completion: the notice when this database's previous finished run had failed, unless the run sent it."""
    outcome = outcome_in(state)  # completion hooks run in the run's own process
    if outcome is None or outcome.notice is not None:
        return
    previous = outcome.previous
    if previous is not None and previous.status.is_failure:
        recorder = record_of(flow, flow_run, state)
        try:
            _tell(recorder, flow_run, state)
        finally:
            recorder.close()
