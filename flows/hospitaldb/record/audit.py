"""The audit trail in the HospitalDB itself (schema etl_audit): every write to it.

A run's record (hospitaldb.record.outcome) is written here as it happens, through the
run's AuditSession (hospitaldb.record.audit_session: one autocommit session, never
failing the refresh); what earlier runs recorded is read back in
hospitaldb.record.audit_history; sql/monitoring/ queries it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hospitaldb.engine.db.database import APPLICATION_NAME
from hospitaldb.record.audit_session import AUDIT_PURPOSE, AuditSession
from hospitaldb.record.outcome import RunOutcome
from hospitaldb.statuses import StepStatus
from hospitaldb.text import safe

if TYPE_CHECKING:
    from hospitaldb.engine.checks.source import SourceState
    from hospitaldb.engine.checks.step import CheckResult
    from hospitaldb.engine.run.runner import StatementResult
    from hospitaldb.engine.run.upkeep import Upkeep
    from hospitaldb.engine.sql.lineage import Lineage

ERROR_LENGTH = 1000


class AuditLog(AuditSession):
    """Every write to etl_audit, as the run happens; see AuditSession for reads and when auditing is off."""

    # --- The run ---------------------------------------------------------------------------

    def run_started(self, outcome: RunOutcome) -> None:
        self._execute(
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, deployment, steps) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (flow_run_id) DO UPDATE SET status = 'running', "
            "outcome = 'running', started_at = now(), finished_at = NULL, error = NULL, failed_step = NULL, "
            "attempts = NULL, sqlstate = NULL",
            (outcome.flow_run_id, outcome.flow_run_name, outcome.deployment, [s.step for s in outcome.steps]),
        )

    def run_finished(self, outcome: RunOutcome) -> None:
        """How the run ended; a run refused before it started gets its row here."""
        self._execute(
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, deployment, steps, status, "
            "outcome, failed_step, attempts, sqlstate, error, finished_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now()) ON CONFLICT (flow_run_id) DO UPDATE SET "
            "status = excluded.status, outcome = excluded.outcome, failed_step = excluded.failed_step, "
            "attempts = excluded.attempts, sqlstate = excluded.sqlstate, error = excluded.error, "
            "finished_at = excluded.finished_at",
            (
                outcome.flow_run_id,
                outcome.flow_run_name,
                outcome.deployment,
                [step.step for step in outcome.steps],
                *self._ending(outcome),
            ),
        )
        self.held_back(outcome)

    def run_interrupted(self, outcome: RunOutcome) -> None:
        """Cancelled or crashed, with its unfinished attempts; only if nobody recorded it yet."""
        self._execute(
            "UPDATE etl_audit.refresh_runs SET status = %s, outcome = %s, failed_step = %s, attempts = %s, "
            "sqlstate = %s, error = %s, finished_at = now() WHERE flow_run_id = %s AND status = 'running'",
            (*self._ending(outcome), outcome.flow_run_id),
        )
        self._execute(
            "UPDATE etl_audit.step_attempts SET status = %s, finished_at = now(), "
            "duration_seconds = extract(epoch FROM now() - started_at), error = %s "
            "WHERE flow_run_id = %s AND status = 'running'",
            (outcome.status.value, _stored(outcome.error), outcome.flow_run_id),
        )
        self.held_back(outcome)

    @staticmethod
    def _ending(outcome: RunOutcome) -> tuple[Any, ...]:
        return (
            outcome.status.audit_status,
            outcome.status.value,
            outcome.step,
            outcome.attempts,
            outcome.sqlstate,
            _stored(outcome.error),
        )

    def abandon_stale_runs(self, flow_run_id: str | None) -> int:
        """Mark other runs still 'running' as abandoned, at the step they were in; return how many.

        Called once this run holds the refresh lock: no other refresh can be running then,
        so any other 'running' row belongs to a process that died without recording it; unless
        its audit session is still open: a run releases the lock, then tells and records its end.
        """
        rows = self._execute(
            "WITH stale AS ("
            "  UPDATE etl_audit.refresh_runs AS r SET status = 'abandoned', outcome = 'abandoned',"
            "         finished_at = now(),"
            "         failed_step = (SELECT a.step FROM etl_audit.step_attempts AS a"
            "                        WHERE a.flow_run_id = r.flow_run_id AND a.status = 'running'"
            "                        ORDER BY a.attempt_id DESC LIMIT 1),"
            "         error = 'abandoned: still running when run ' || %s || ' took the refresh lock at ' || now()"
            "  WHERE r.status = 'running' AND r.flow_run_id <> %s"
            "    AND NOT EXISTS (SELECT FROM pg_stat_activity AS s"
            "                    WHERE s.application_name = %s || r.flow_run_id::text)"
            "  RETURNING r.flow_run_id"
            "), attempts AS ("
            "  UPDATE etl_audit.step_attempts AS a SET status = 'abandoned', finished_at = now(),"
            "         duration_seconds = extract(epoch FROM now() - a.started_at)"
            "  FROM stale WHERE a.flow_run_id = stale.flow_run_id AND a.status = 'running'"
            ") SELECT count(*) FROM stale",
            (flow_run_id, flow_run_id, f"{APPLICATION_NAME}-{AUDIT_PURPOSE}-"),
        )
        return rows[0][0] if rows else 0

    # --- Steps, statements, checks, objects, sources ----------------------------------------

    def attempt_started(
        self, flow_run_id: str | None, step: str, attempt: int, task_run_id: str | None = None
    ) -> int | None:
        if flow_run_id is None:
            return None
        rows = self._execute(
            "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt, task_run_id) "
            "VALUES (%s, %s, %s, %s) RETURNING attempt_id",
            (flow_run_id, step, attempt, task_run_id),
        )
        return rows[0][0] if rows else None

    def statement_finished(self, attempt_id: int | None, result: StatementResult) -> None:
        if attempt_id is None:
            return
        self._execute(
            "INSERT INTO etl_audit.statement_runs (attempt_id, statement_number, location, summary, "
            "duration_seconds, rows_affected) VALUES (%s, %s, %s, %s, %s, %s)",
            (attempt_id, result.number, result.location, result.summary, result.seconds, result.rows),
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
            "UPDATE etl_audit.step_attempts SET status = %s, finished_at = now(), "
            "duration_seconds = extract(epoch FROM now() - started_at), statements = %s, "
            "rows_affected = %s, sqlstate = %s, error = %s WHERE attempt_id = %s",
            (status.value, statements, rows, sqlstate, _stored(error), attempt_id),
        )

    def objects_planned(self, flow_run_id: str | None, lineage: Lineage) -> None:
        """What this run's steps refresh (object -> step), and what each reads."""
        self._rows_of_run(
            flow_run_id,
            "INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name, reads) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (flow_run_id, object_name) DO UPDATE SET reads = excluded.reads",
            [
                (flow_run_id, step, name, sorted(lineage.reads.get(name, ())))
                for name, step in lineage.steps.items()
            ],
        )

    def objects_kept_up(self, flow_run_id: str | None, upkeep: list[Upkeep]) -> None:
        """What upkeep did to each object after its step committed."""
        self._rows_of_run(
            flow_run_id,
            "UPDATE etl_audit.run_objects SET upkeep = %s, upkeep_seconds = %s "
            "WHERE flow_run_id = %s AND object_name = %s",
            [
                (
                    item.action if item.why is None else f"{item.action}: {item.why}",
                    item.seconds,
                    flow_run_id,
                    item.object_name,
                )
                for item in upkeep
            ],
        )

    def held_back(self, outcome: RunOutcome) -> None:
        """The objects the run did not publish, and why (once: a hook may record it again)."""
        self._rows_of_run(
            outcome.flow_run_id,
            "INSERT INTO etl_audit.held_back (flow_run_id, object_name, step, reason, upstream) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [
                (outcome.flow_run_id, held.object_name, held.step, held.reason, held.upstream)
                for held in outcome.held_back
            ],
        )

    def objects_refreshed(
        self,
        flow_run_id: str | None,
        attempt_id: int | None,
        row_counts: dict[str, int],
        changes: dict[str, dict[str, int]],
    ) -> None:
        """Each object's rows after it committed, what was inserted, updated, deleted, and when.

        When: as its step's attempt finished, or now for views that parallel_views committed
        while their step's attempt went on.
        """
        self._rows_of_run(
            flow_run_id,
            "UPDATE etl_audit.run_objects SET row_count = %s, inserted = %s, updated = %s, deleted = %s, "
            "published_at = coalesce((SELECT finished_at FROM etl_audit.step_attempts WHERE attempt_id = %s), "
            "now()) WHERE flow_run_id = %s AND object_name = %s",
            [
                (
                    row_counts.get(name),
                    counts["inserted"],
                    counts["updated"],
                    counts["deleted"],
                    attempt_id,
                    flow_run_id,
                    name,
                )
                for name, counts in changes.items()
            ],
        )

    def checks_finished(
        self, flow_run_id: str | None, attempt_id: int | None, step: str, results: list[CheckResult]
    ) -> None:
        self._rows_of_run(
            flow_run_id,
            "INSERT INTO etl_audit.check_results (flow_run_id, attempt_id, step, check_name, source_file, "
            "severity, outcome, violating_rows, duration_seconds, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
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
            "INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count, newest) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (flow_run_id, source) DO UPDATE "
            "SET row_count = excluded.row_count, newest = excluded.newest, checked_at = now()",
            [(flow_run_id, state.source, state.row_count, state.newest) for state in states],
        )

    def run_told(self, outcome: RunOutcome) -> None:
        """The run's alert or notice was delivered: on record once, so that no hook sends it again."""
        notice = outcome.notice
        if notice is not None and outcome.flow_run_id is not None:
            self._execute(
                "INSERT INTO etl_audit.run_notices (flow_run_id, kind, sent_by, channels) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (flow_run_id, kind) DO NOTHING",
                (outcome.flow_run_id, notice.kind, notice.sent_by, list(notice.channels)),
            )

    # --- The freshness check ----------------------------------------------------------------

    def freshness_alert_sent(self, stale_steps: list[str]) -> None:
        self._execute("INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES (%s)", (stale_steps,))


def _stored(error: str | None) -> str | None:
    """Errors are stored as they would be shown: redacted and cut to length."""
    return safe(error, ERROR_LENGTH) if error else None
