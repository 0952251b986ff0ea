"""The audit trail in the HospitalDB itself (schema etl_audit): every write to it.

Every write is a call of one of etl_audit's functions (sql/schema/05_etl_audit.sql), which keep
each record's life and stamp its times with the database's clock: the refresher may not INSERT
or UPDATE etl_audit itself (docs/security.md).

A run's record (hospitaldb.record.outcome) is written here as it happens, through the
run's AuditSession (hospitaldb.record.audit_session: one autocommit session, never
failing the refresh); what earlier runs recorded is read back in
hospitaldb.record.audit_history; sql/monitoring/ queries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hospitaldb.record.audit_session import AuditSession
from hospitaldb.record.outcome import RunOutcome
from hospitaldb.statuses import StepStatus
from hospitaldb.text import safe

if TYPE_CHECKING:
    from hospitaldb.engine.changes.modes import ChosenMode
    from hospitaldb.engine.checks.source import SourceState
    from hospitaldb.engine.checks.step import CheckResult
    from hospitaldb.engine.run.statements import StatementResult
    from hospitaldb.engine.run.upkeep import Upkeep
    from hospitaldb.engine.sql.lineage import Lineage

ERROR_LENGTH = 1000


class AuditLog(AuditSession):
    """Every write to etl_audit, as the run happens; see AuditSession for reads and when auditing is off."""

    # --- The run ---------------------------------------------------------------------------

    def run_started(self, outcome: RunOutcome) -> None:
        self._execute(
            "SELECT etl_audit.open_run(%s, %s, %s, %s)",
            (outcome.flow_run_id, outcome.flow_run_name, outcome.deployment, [s.step for s in outcome.steps]),
        )

    def run_ended(self, outcome: RunOutcome) -> None:
        """How the run ended (finished, cancelled or crashed), what it held back, its unfinished attempts;
        only if nobody recorded its end yet. A run refused before it started is opened and closed here."""
        self.held_back(outcome)  # while the run is open: a closed run's record is never added to
        self._execute(
            "SELECT etl_audit.close_run(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                outcome.flow_run_id,
                outcome.flow_run_name,
                outcome.deployment,
                [step.step for step in outcome.steps],
                outcome.status.value,
                outcome.step,
                outcome.attempts,
                outcome.sqlstate,
                _stored(outcome.error),
            ),
        )

    def abandon_stale_runs(self, flow_run_id: str | None) -> int:
        """Mark other runs still 'running' as abandoned, at the step they were in; return how many.

        Called once this run holds the refresh lock: no other refresh can be running then,
        so any other 'running' row belongs to a process that died without recording it; unless
        its audit session is still open: a run releases the lock, then tells and records its end.
        """
        if flow_run_id is None:
            return 0
        rows = self._execute("SELECT etl_audit.abandon_stale_runs(%s)", (flow_run_id,))
        return rows[0][0] if rows else 0

    # --- Steps, statements, checks, objects, sources ----------------------------------------

    def attempt_started(
        self, flow_run_id: str | None, step: str, attempt: int, task_run_id: str | None = None
    ) -> int | None:
        if flow_run_id is None:
            return None
        rows = self._execute(
            "SELECT etl_audit.open_attempt(%s, %s, %s, %s)", (flow_run_id, step, attempt, task_run_id)
        )
        return rows[0][0] if rows else None

    def statement_finished(self, attempt_id: int | None, result: StatementResult) -> None:
        if attempt_id is None:
            return
        self._execute(
            "SELECT etl_audit.record_statement(%s, %s, %s, %s, %s, %s)",
            (attempt_id, result.number, result.location, result.summary, result.seconds, result.rows),
        )

    def mode_chosen(self, attempt_id: int | None, mode: ChosenMode, drift_rows: int) -> None:
        """Which form of the step ran, why, the keys it took and the drift a full run repaired."""
        if attempt_id is None:
            return
        self._execute(
            "SELECT etl_audit.record_mode(%s, %s, %s, %s, %s)",
            (attempt_id, mode.mode, mode.reason, mode.changed_keys, drift_rows if mode.verify else None),
        )

    def attempt_finished(
        self,
        attempt_id: int | None,
        status: StepStatus,
        *,
        statements: int | None = None,
        rows: int | None = None,
        sqlstate: str | None = None,
        error: str | None = None,
    ) -> None:
        if attempt_id is None:
            return
        self._execute(
            "SELECT etl_audit.finish_attempt(%s, %s, %s, %s, %s, %s)",
            (attempt_id, status.value, statements, rows, sqlstate, _stored(error)),
        )

    def objects_planned(self, flow_run_id: str | None, lineage: Lineage) -> None:
        """What this run's steps refresh (object -> step), and what each reads."""
        self._rows_of_run(
            flow_run_id,
            "SELECT etl_audit.plan_object(%s, %s, %s, %s)",
            [
                (flow_run_id, step, name, sorted(lineage.reads.get(name, ())))
                for name, step in lineage.steps.items()
            ],
        )

    def objects_kept_up(self, flow_run_id: str | None, upkeep: list[Upkeep]) -> None:
        """What upkeep did to each object after its step committed."""
        self._rows_of_run(
            flow_run_id,
            "SELECT etl_audit.object_kept_up(%s, %s, %s, %s)",
            [
                (
                    flow_run_id,
                    item.object_name,
                    item.action if item.why is None else f"{item.action}: {item.why}",
                    item.seconds,
                )
                for item in upkeep
            ],
        )

    def held_back(self, outcome: RunOutcome) -> None:
        """The objects the run did not publish, and why (once: a hook may record it again)."""
        self._rows_of_run(
            outcome.flow_run_id,
            "SELECT etl_audit.hold_back(%s, %s, %s, %s, %s)",
            [
                (outcome.flow_run_id, held.object_name, held.step, held.reason, held.upstream)
                for held in outcome.held_back
            ],
        )

    def objects_refreshed(
        self,
        flow_run_id: str | None,
        attempt_id: int | None,
        row_counts: dict[str, int | None],
        changes: dict[str, dict[str, int]],
    ) -> None:
        """Each object's rows after it committed, what was inserted, updated, deleted, and when.

        When: as its step's attempt finished, or now for views that parallel_views committed
        while their step's attempt went on.
        """
        self._rows_of_run(
            flow_run_id,
            "SELECT etl_audit.object_published(%s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    flow_run_id,
                    attempt_id,
                    name,
                    row_counts.get(name),
                    counts["inserted"],
                    counts["updated"],
                    counts["deleted"],
                )
                for name, counts in changes.items()
            ],
        )

    def checks_finished(
        self, flow_run_id: str | None, attempt_id: int | None, step: str, results: list[CheckResult]
    ) -> None:
        self._rows_of_run(
            flow_run_id,
            "SELECT etl_audit.record_check(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    flow_run_id,
                    attempt_id,
                    step,
                    result.name,
                    result.source,
                    result.severity,
                    result.outcome,
                    result.violating_rows,
                    result.seconds,
                    _stored(result.detail),
                )
                for result in results
            ],
        )

    def sources_read(self, flow_run_id: str | None, states: list[SourceState]) -> None:
        self._rows_of_run(
            flow_run_id,
            "SELECT etl_audit.record_sources(%s, %s, %s, %s)",
            [(flow_run_id, state.source, state.row_count, state.newest) for state in states],
        )

    def run_told(self, outcome: RunOutcome) -> None:
        """The run's alert or notice was delivered: on record once, so that no hook sends it again."""
        notice = outcome.notice
        if notice is not None and outcome.flow_run_id is not None:
            self._execute(
                "SELECT etl_audit.record_notice(%s, %s, %s, %s)",
                (outcome.flow_run_id, notice.kind, notice.sent_by, list(notice.channels)),
            )

    # --- The freshness check ----------------------------------------------------------------

    def freshness_alert_sent(self, stale_steps: list[str]) -> None:
        self._execute("SELECT etl_audit.record_freshness_alert(%s)", (stale_steps,))


def _stored(error: str | None) -> str | None:
    """Errors are stored as they would be shown: redacted and cut to length."""
    return safe(error, ERROR_LENGTH) if error else None
