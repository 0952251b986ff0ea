"""The record of one run, kept as it happens: each event makes a new outcome and is written to etl_audit.

The flow opens a RunRecorder at its start and hands it to its tasks; each attempt, check
and object is an update of the run's outcome (an immutable value: hospitaldb.record.outcome)
and a write to etl_audit. An error becomes a Failure once, where it happened: at the step
that failed, else as the run ends. When the body ends, `recording` hands the final outcome
over with the flow's return value or error, for the state hooks and the command line.
A cancel or a crash goes through one path, `interrupted`, whoever notes it first (the
flow or a hook), with the same text. The run tells its own end (`tell`: its alert, or a
recovery notice) from its own process, before its record is written and before Prefect
hears of it: an alert must not wait for the orchestrator, nor for a failing database.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hospitaldb.engine.checks.source import SourceCheckFailed, SourceProblem
from hospitaldb.engine.checks.step import CheckFailed
from hospitaldb.engine.db.errors import RefreshError, StepError
from hospitaldb.record.audit import AuditLog
from hospitaldb.record.audit_history import previous_finished_run
from hospitaldb.record.handover import RunFailed, handed_over
from hospitaldb.record.outcome import Failure, Notice, RunOutcome, SourcesOutcome, StepOutcome, failure_of
from hospitaldb.record.step_attempt import StepAttempt
from hospitaldb.settings import AUDIT_REQUIRED
from hospitaldb.statuses import RunStatus, StepStatus

if TYPE_CHECKING:
    from hospitaldb.engine.checks.source import SourceState
    from hospitaldb.engine.run.context import RunContext
    from hospitaldb.engine.run.runner import StepResult
    from hospitaldb.engine.run.upkeep import Upkeep
    from hospitaldb.engine.sql.lineage import Lineage

Logger = logging.Logger | logging.LoggerAdapter
LOCK_PLACE = "refresh_lock"  # where the overlap lock's connection attempts are on record (step_attempts.step)
PublishArtifacts = Callable[[RunOutcome, Logger], None]  # hospitaldb.report.artifacts.publish_run_artifacts
StoppedAs = Callable[[], RunStatus]  # cancelled or crashed, when a signal stops the run
Tell = Callable[[RunOutcome, Logger], Notice | None]  # hospitaldb.report.telling.Teller


class AuditNotWritten(StepError):
    """The run's audit trail failed and the audit is required: the step stops, rolled back."""


class RunRecorder:
    """What one run did, recorded once: the outcome so far, and the writer of its etl_audit rows."""

    def __init__(
        self,
        outcome: RunOutcome,
        logger: Logger,
        audit: AuditLog | None = None,
    ) -> None:
        self.outcome = outcome
        self.logger = logger
        self.audit = audit
        self.audit_required = False  # publish nothing that is not on record (HOSPITALDB_AUDIT_REQUIRED)
        self._attempts: dict[str, int] = {}

    # --- The run, as it happens --------------------------------------------------------------

    def update_step(self, step: str, **changes: Any) -> None:
        """A step's outcome (or the source checks'), updated by its attempt in progress (record.step_attempt)."""
        self.outcome = self.outcome.with_step(step, **changes)

    def use_database(self, context: RunContext) -> RunContext:
        """The run's database, resolved once: its audit is written there, within the run's limits."""
        self.outcome = replace(self.outcome, database=context.target.describe())
        self.audit = AuditLog(
            context.target,
            self.logger,
            context.files,
            context.limits,
            writes=not self.outcome.dry_run,
            run_id=self.outcome.flow_run_id,
        )
        return context

    def start(self, selected: list[str]) -> list[str]:
        self.outcome = replace(self.outcome, steps=[StepOutcome(step) for step in selected])
        if self.audit:
            self.audit.run_started(self.outcome)
        return selected

    def planned(self, lineage: Lineage) -> None:
        """What the selected steps refresh and read: what a failure would hold back."""
        self.outcome = replace(self.outcome, lineage=lineage)
        if self.audit:
            self.audit.objects_planned(self.outcome.flow_run_id, lineage)

    def abandon_stale_runs(self) -> None:
        abandoned = self.audit.abandon_stale_runs(self.outcome.flow_run_id) if self.audit else 0
        if abandoned:
            self.logger.warning(
                "%d earlier run(s) were still 'running' in etl_audit: their process died unrecorded "
                "(killed, out of memory); marked abandoned",
                abandoned,
            )

    def sources_read(
        self, enforced: bool, states: list[SourceState], problems: list[SourceProblem], seconds: float
    ) -> None:
        """What the source checks read: each source's count (the next run's baseline) and its problems.

        Their check results are the attempt's, like a step's (StepAttempt.checked, or the failure).
        """
        self.outcome = replace(self.outcome, sources=SourcesOutcome(enforced, len(states), problems, seconds))
        if self.audit:
            self.audit.sources_read(self.outcome.flow_run_id, states)

    @contextmanager
    def step_attempt(self, step: str, number: int, task_run_id: str | None = None) -> Iterator[StepAttempt]:
        """One attempt of a step (or of the source checks), on record even when it fails and rolls back.

        Its error becomes the step's Failure here, once: the audit row, the run's ending and
        every report read that value.
        """
        self._attempts[step] = number
        self.outcome = self.outcome.with_step(
            step, status=StepStatus.RUNNING, attempts=number, failure=None, task_run_id=task_run_id
        )
        attempt_id = (
            self.audit.attempt_started(self.outcome.flow_run_id, step, number, task_run_id)
            if self.audit
            else None
        )
        attempt = StepAttempt(self, step, attempt_id)
        try:
            yield attempt
        except Exception as error:
            failure = failure_of(error)
            ran = [outcome.checks for outcome in self.outcome.steps if outcome.step == step]
            failed_checks = isinstance(error, CheckFailed | SourceCheckFailed)
            checks = error.results if failed_checks else (ran[0] if ran else [])
            self.outcome = self.outcome.with_step(
                step, status=StepStatus.FAILED, checks=checks, failure=failure
            )
            if self.audit:
                if failed_checks:
                    self.audit.checks_finished(self.outcome.flow_run_id, attempt_id, step, error.results)
                self.audit.attempt_finished(
                    attempt_id, StepStatus.FAILED, sqlstate=failure.sqlstate, error=failure.text
                )
            raise
        # A BaseException (cancel, SIGTERM) leaves the attempt 'running': `interrupted` records it.

    def lock_attempt(self, number: int, error: BaseException | None) -> None:
        """An attempt to open the overlap lock's session, when it took more than one: on record, place 'refresh_lock'."""
        if self.audit:
            attempt_id = self.audit.attempt_started(self.outcome.flow_run_id, LOCK_PLACE, number)
            failure = failure_of(error) if error else None
            self.audit.attempt_finished(
                attempt_id,
                StepStatus.FAILED if failure else StepStatus.COMPLETED,
                sqlstate=failure.sqlstate if failure else None,
                error=failure.text if failure else None,
            )

    def verify_audit(self, step: str) -> None:
        """Before an attempt and before its COMMIT: refuse to publish what could not be put on record."""
        if self.audit_required and self.audit is not None and self.audit.failed and not self.outcome.dry_run:
            raise AuditNotWritten(
                step,
                "the audit trail (etl_audit) cannot be written, see the warning above, and a run that is not "
                f"on record publishes nothing ({AUDIT_REQUIRED}; docs/security.md)",
            )

    def kept_up(self, step: str, upkeep: list[Upkeep]) -> None:
        """What upkeep did after the step committed: on the step's record and each object's."""
        self.outcome = self.outcome.with_step(step, upkeep=upkeep)
        if self.audit:
            self.audit.objects_kept_up(self.outcome.flow_run_id, upkeep)

    def step_dry_run(self, result: StepResult) -> None:
        """A step of a dry run: what it would have done (nothing is recorded in etl_audit)."""
        StepAttempt(self, result.step, None).completed(result)

    # --- How it ended ------------------------------------------------------------------------

    def finish(self, error: BaseException | None = None) -> None:
        """Completed, or ended by error: where, after how many attempts, and why.

        A step's error was made a Failure as its attempt ended: the run ends with that value.
        """
        outcome, now = self.outcome, datetime.now(UTC)
        if error is None:
            previous = None
            if self.audit and not outcome.dry_run:  # for the "recovered" notice; a dry run recovers nothing
                previous = previous_finished_run(self.audit, outcome.flow_run_id)
            self.outcome = replace(outcome, status=RunStatus.COMPLETED, previous=previous, finished_at=now)
        else:
            failure = self._step_failure(error) or failure_of(error)
            attempts = self._attempts.get(failure.step) if failure.step else None
            self.outcome = outcome.ended(failure, attempts, now)

    def tell(self, tell: Tell | None) -> None:
        """Tell how the run ended (its alert, or a recovery notice), and record that it was told."""
        if tell is None or self.outcome.notice is not None:
            return
        try:
            notice = tell(self.outcome, self.logger)
        except Exception as error:  # a bug in telling must not replace how the run ended
            self.logger.error(
                "the run's alert could not be made: %s (a hook tries again)", type(error).__name__
            )
            return
        if notice is not None:
            self.outcome = replace(self.outcome, notice=notice)
            if self.audit:
                self.audit.run_told(self.outcome)

    def _step_failure(self, error: BaseException) -> Failure | None:
        """The Failure recorded when the step that raised error failed, if it did."""
        if not isinstance(error, StepError) or error.step not in {s.step for s in self.outcome.steps}:
            return None
        return self.outcome.step_outcome(error.step).failure

    def interrupted(self, status: RunStatus, *, write: bool = True) -> None:
        """Cancelled or crashed, at the step in progress; written once, whoever comes first."""
        if not self.outcome.status.is_interruption:
            self.outcome = self.outcome.interrupted(status, datetime.now(UTC))
        if write and self.audit:
            self.audit.run_ended(self.outcome)

    @contextmanager
    def recording(
        self,
        publish: PublishArtifacts | None = None,
        stopped_as: StoppedAs = lambda: RunStatus.CRASHED,
        tell: Tell | None = None,
    ) -> Iterator[RunRecorder]:
        """The run's one boundary, around the flow's body: how it ended, recorded, told, published, handed over.

        Any error ends the run as RunFailed, which carries the outcome (record.handover); a
        cancel or a crash (a BaseException: TerminationSignal) goes on as it is, for Prefect,
        with the outcome attached. stopped_as tells a cancel from a crash (hospitaldb.run_context
        asks Prefect).
        """
        try:
            yield self
        except Exception as error:
            self.end(error, stopped_as, tell)
            # Ours is safe to chain (and says where it was raised); a driver's error is not (its DETAIL).
            raise RunFailed(self.outcome, error) from (error if isinstance(error, RefreshError) else None)
        except BaseException as error:
            self.end(error, stopped_as, tell)
            handed_over(error, self.outcome)
            raise
        else:
            self.end(None, stopped_as, tell)
        finally:
            if publish:
                publish(self.outcome, self.logger)
            self.close()

    def end(self, error: BaseException | None, stopped_as: StoppedAs, tell: Tell | None) -> None:
        """How the run ended, in one place: the outcome made, told, then written.

        Told before its record is written (the database may be what failed) and before Prefect
        hears of it (with the API down no state hook runs). A cancel is written before it is
        told, for the worker's hook; a crash after (SIGKILL follows in 30 s).
        """
        if error is None or isinstance(error, Exception):
            self.finish(error)
        else:  # TerminationSignal: cancelled, or the process is being stopped
            status = stopped_as()
            self.interrupted(status, write=status == RunStatus.CANCELLED)
        self.tell(tell)
        if self.audit:
            self.audit.run_ended(self.outcome)

    def close(self) -> None:
        if self.audit:
            self.audit.close()
