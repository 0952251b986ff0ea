"""What the flows ask Prefect about the run in progress: who it is, for its record, and why it is stopped.

The record (hospitaldb.record) knows nothing of Prefect; the flows bring it these two answers.
"""

from __future__ import annotations

from prefect import get_run_logger, runtime

from hospitaldb.record.outcome import RunOutcome
from hospitaldb.record.recorder import Logger, RunRecorder
from hospitaldb.statuses import RunStatus


def recorder_for_this_run(*, dry_run: bool = False) -> RunRecorder:
    """A recorder for the flow run in progress (inside a flow), named as Prefect names the run."""
    run_id = runtime.flow_run.id
    outcome = RunOutcome(
        flow_name=runtime.flow_run.flow_name,
        flow_run_id=str(run_id) if run_id else None,
        flow_run_name=runtime.flow_run.name,
        deployment=runtime.deployment.name,
        dry_run=dry_run,
    )
    return RunRecorder(outcome, get_run_logger())


def stopped_as() -> RunStatus:
    """CANCELLED when the worker stopped this run because it was cancelled; else CRASHED (still alerted).

    A private Prefect module, on purpose: Prefect 3.9 tells a cancel from any other SIGTERM
    only on the worker's control channel, read here. The public alternative, asking the API
    for the run's state, needs the API at the very moment the run is being stopped. A
    Prefect version without it: the signal counts as a crash.
    """
    try:
        from prefect._internal.control_listener import get_intent
    except ImportError:
        return RunStatus.CRASHED
    return RunStatus.CANCELLED if get_intent() == "cancel" else RunStatus.CRASHED


def audit_required(logger: Logger) -> bool:
    """HOSPITALDB_AUDIT_REQUIRED, else true for a deployment's run, false for a local one; warned when relaxed."""
    from hospitaldb.settings import AUDIT_REQUIRED

    deployed = runtime.deployment.id is not None
    setting = (AUDIT_REQUIRED.read() or "").lower()
    required = setting in ("1", "true", "yes") if setting else deployed
    if deployed and not required:
        logger.warning(
            "%s=%s: this run publishes even if its audit trail cannot be written (it would be on no record)",
            AUDIT_REQUIRED,
            setting,
        )
    return required
