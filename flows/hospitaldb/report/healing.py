"""Prefect's view of a run, made true from the run's own record when the API was down as the run ended.

A run tells its failure and writes etl_audit without the Prefect API (hospitaldb.report.telling);
what only Prefect holds (the run's final state, its task runs, its artifacts) waits for it:

- `report_when_back`: the run's own end. Its artifacts are published; when the API does not
  answer, the run waits for it (HOSPITALDB_API_WAIT_SECONDS, default 15 minutes), then
  publishes them, sets its task runs from their recorded attempts, and returns: the engine
  then reports its final state itself. Either way, log lines an outage lost during the run
  are sent once the API answers (hospitaldb.report.lost_logs).
- `heal_earlier_runs`: for the next run and the freshness check. A run that Prefect still
  shows Running or Pending, whose etl_audit row is closed, ended unheard (its process gave up
  waiting, or was killed): it is set to its recorded ending, with its task runs and artifacts.
  That also frees the deployment's concurrency slot, which such a run would hold for ever.

Nothing here fails a run: Prefect's view is a report, etl_audit is the record.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from hospitaldb.record.audit_history import load_outcome
from hospitaldb.record.audit_session import AuditSession
from hospitaldb.record.outcome import REFRESH_FLOW, RunOutcome
from hospitaldb.record.recorder import Logger
from hospitaldb.report.artifacts import publish_run_artifacts
from hospitaldb.report.lost_logs import KeptLogs, send_lost_logs
from hospitaldb.settings import API_WAIT_SECONDS
from hospitaldb.statuses import RunStatus, StepStatus

DEFAULT_API_WAIT_SECONDS = 900.0
POLL_SECONDS = 5.0


def api_answers() -> bool:
    """The Prefect API answers its health check now (a fresh client: no retries on a refused connection)."""
    try:
        with _client() as client:
            return client.api_healthcheck() is None
    except Exception:
        return False


def report_when_back(outcome: RunOutcome, logger: Logger, kept: KeptLogs | None = None) -> None:
    """Publish the run's artifacts; with the API down, wait for it, then heal what it missed.

    kept: the run's log lines (hospitaldb.report.lost_logs): those an outage lost, at any time
    during the run, are sent once the API answers.
    """
    published = publish_run_artifacts(outcome, logger)
    if outcome.flow_run_id is None:
        return
    if published:
        _send_lost_logs(outcome.flow_run_id, kept, logger)
        return
    if api_answers():
        return  # the API answers, the artifacts did not: logged, nothing to heal
    wait = float(API_WAIT_SECONDS.read() or DEFAULT_API_WAIT_SECONDS)
    logger.warning(
        "the Prefect API does not answer: the run is on record (etl_audit) and told; waiting up to "
        "%g s to report its state, task runs and artifacts (%s)",
        wait,
        API_WAIT_SECONDS,
    )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        if api_answers():
            try:
                with _client() as client:
                    _heal_task_runs(client, outcome, logger)
            except Exception as error:  # a report, never the run's failure
                logger.warning("task runs not set: %s", type(error).__name__)
            publish_run_artifacts(outcome, logger)
            logger.info("the Prefect API answers again: task runs and artifacts reported")
            _send_lost_logs(outcome.flow_run_id, kept, logger)
            return
    logger.error(
        "the Prefect API did not answer within %g s: Prefect may show this run unfinished until the "
        "next run or freshness check sets it from etl_audit",
        wait,
    )


def _send_lost_logs(flow_run_id: str, kept: KeptLogs | None, logger: Logger) -> None:
    if kept is None:
        return
    try:
        with _client() as client:
            lost = send_lost_logs(client, flow_run_id, kept)
    except Exception as error:  # a report, never the run's failure
        logger.warning("the run's log lines not checked against Prefect's: %s", type(error).__name__)
        return
    if lost:
        logger.info("%d log line(s) the Prefect API had lost sent again", lost)


def heal_earlier_runs(audit: AuditSession, logger: Logger, current_run_id: str | None) -> int:
    """Set every earlier refresh run that Prefect shows unfinished but etl_audit has closed; return how many."""
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    healed = 0
    try:
        with _client() as client:
            unfinished = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[REFRESH_FLOW])),
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
                    )
                ),
                limit=50,
            )
            for run in unfinished:
                if str(run.id) == current_run_id:
                    continue
                outcome = load_outcome(audit, str(run.id), REFRESH_FLOW)
                if outcome is None or outcome.status == RunStatus.RUNNING:
                    continue  # not on record here (another database's run), or still running
                _heal_task_runs(client, outcome, logger)
                client.set_flow_run_state(
                    run.id, _state_of(outcome.status, outcome.title(outcome.what)), force=True
                )
                publish_run_artifacts(outcome, logger)
                logger.warning(
                    "run %s ended %s while Prefect was not listening; set from etl_audit",
                    run.name,
                    outcome.status.value,
                )
                healed += 1
    except Exception as error:  # a report, never the run's failure
        logger.warning("earlier runs not checked against etl_audit: %s", type(error).__name__)
    return healed


def _client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def _heal_task_runs(client: Any, outcome: RunOutcome, logger: Logger) -> None:
    """Each task run that Prefect shows unfinished, or never heard of, set as the run recorded its end."""
    from prefect.exceptions import ObjectNotFound

    for task in outcome.tasks:
        if not task.task_run_id or task.status in (StepStatus.NOT_RUN, StepStatus.RUNNING):
            continue
        state = _state_of(RunStatus(task.status.value), task.step)
        try:
            try:
                task_run = client.read_task_run(UUID(task.task_run_id))
            except ObjectNotFound:  # its creation was lost with the API: made now, with the id on record
                client.create_task_run(
                    _stand_in(task.step),
                    UUID(outcome.flow_run_id),
                    dynamic_key=task.step,
                    id=UUID(task.task_run_id),
                    name=f"{task.step}-healed",
                    state=state,
                )
                continue
            if task_run.state is None or not task_run.state.is_final():
                client.set_task_run_state(task_run.id, state, force=True)
        except Exception as error:  # a report: the steps artifact lists every step either way
            logger.info("task run of %s not set: %s", task.step, type(error).__name__)


def _stand_in(name: str) -> Any:
    """A task by the step's name, to create its lost task run with (the flow's own tasks live above report/)."""
    from prefect import Task

    return Task(fn=_ran_unheard, name=name)


def _ran_unheard() -> None:
    """What a healed task run stands for: a step the run recorded while Prefect could not hear it."""


def _state_of(status: RunStatus, message: str) -> Any:
    from prefect.states import Cancelled, Completed, Crashed, Failed

    if status == RunStatus.COMPLETED:
        return Completed(message=message)
    if status == RunStatus.CANCELLED:
        return Cancelled(message=message)
    if status in (RunStatus.CRASHED, RunStatus.ABANDONED):
        return Crashed(message=message)
    return Failed(message=message)
