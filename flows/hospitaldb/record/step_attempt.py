"""One attempt of a step in progress: its statements as they finish, its result, what it published.

Made by the run's recorder (hospitaldb.record.recorder.RunRecorder.step_attempt), whose
outcome it updates and whose etl_audit session it writes through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from hospitaldb.record.audit import AuditLog
from hospitaldb.record.outcome import RunOutcome
from hospitaldb.statuses import StepStatus

if TYPE_CHECKING:
    from hospitaldb.engine.checks.step import CheckResult
    from hospitaldb.engine.run.runner import StepResult
    from hospitaldb.engine.run.statements import StatementResult


class Recording(Protocol):
    """What an attempt needs of the run's recorder: the outcome to read and update, the audit to write."""

    @property
    def outcome(self) -> RunOutcome: ...

    audit: AuditLog | None

    def update_step(self, step: str, **changes: Any) -> None: ...


class StepAttempt:
    """An attempt in progress: its statements as they finish, then its result."""

    def __init__(self, recorder: Recording, step: str, attempt_id: int | None) -> None:
        self._recorder = recorder
        self._step = step
        self._attempt_id = attempt_id
        self._committed: set[str] = set()

    def views_committed(self, result: StepResult) -> None:
        """A group of a step's views refreshed in its own session (parallel_views) committed: published now."""
        self._published(result.row_counts, result.changes)

    def statement_finished(self, result: StatementResult) -> None:
        if self._recorder.audit:
            self._recorder.audit.statement_finished(self._attempt_id, result)

    def checked(self, checks: list[CheckResult], seconds: float) -> None:
        """An attempt that refreshes nothing (the source checks) passed: its checks on record, as a step's are."""
        recorder = self._recorder
        recorder.update_step(self._step, status=StepStatus.COMPLETED, checks=checks, seconds=seconds)
        if recorder.audit:
            recorder.audit.checks_finished(recorder.outcome.flow_run_id, self._attempt_id, self._step, checks)
            recorder.audit.attempt_finished(self._attempt_id, StepStatus.COMPLETED)

    def completed(self, result: StepResult) -> None:
        recorder = self._recorder
        recorder.update_step(
            self._step,
            status=StepStatus.COMPLETED,
            attempts=recorder.outcome.step_outcome(self._step).attempts or 1,
            statements=len(result.statements),
            seconds=result.seconds,
            rows=result.rows,
            checks=result.checks,
            changes=result.changes,
            row_count_seconds=result.row_count_seconds,
            mode=result.mode.mode if result.mode else None,
            mode_reason=result.mode.reason if result.mode else None,
            changed_keys=result.mode.changed_keys if result.mode else None,
            drift_checked=bool(result.mode and result.mode.verify),
            drift=result.drift,
        )
        audit, run_id = recorder.audit, recorder.outcome.flow_run_id
        if audit:
            if result.mode:
                audit.mode_chosen(self._attempt_id, result.mode, result.drift_rows)
            audit.checks_finished(run_id, self._attempt_id, self._step, result.checks)
            audit.attempt_finished(
                self._attempt_id, StepStatus.COMPLETED, statements=len(result.statements), rows=result.rows
            )
        self._published(result.row_counts, result.changes)

    def _published(self, row_counts: dict[str, int | None], changes: dict[str, dict[str, int]]) -> None:
        """Objects this attempt committed, on record once each (a view in parallel_views, as it commits)."""
        recorder = self._recorder
        if recorder.outcome.dry_run:
            return  # rolled back at the end: nothing was published
        new = {name: counts for name, counts in changes.items() if name not in self._committed}
        self._committed.update(new)
        published = recorder.outcome.step_outcome(self._step).published
        recorder.update_step(
            self._step, published=[*published, *(name for name in new if name not in published)]
        )
        if recorder.audit and new:
            recorder.audit.objects_refreshed(recorder.outcome.flow_run_id, self._attempt_id, row_counts, new)
