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

from hospitaldb.alerts import describe_failure, describe_recovery
from hospitaldb.notifications import AlertSettings, deliver
from hospitaldb.outcome import RunStatus
from hospitaldb.recorder import RunRecorder


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
    _alert(RunRecorder.of_run(flow, flow_run), flow_run, state)


def report_interruption(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed and on_cancellation: note it, alert, then write it."""
    recorder = RunRecorder.of_run(flow, flow_run)
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
