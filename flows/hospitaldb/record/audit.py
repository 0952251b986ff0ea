"""The audit trail in the HospitalDB itself (schema etl_audit): its session, and every write to it.

A run's record (hospitaldb.record.outcome) is written here as it happens; what earlier
runs recorded is read back in hospitaldb.record.audit_history; sql/monitoring/ queries it.
Rows go through one autocommit session per run, so a step that rolls back still
leaves its attempt and statements on record. Any failure to write (no privilege,
schema missing and not creatable, a full disk) is logged once and switches the
audit off for this writer: auditing never fails the refresh.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extras

from hospitaldb.engine.database import DatabaseTarget, Limits
from hospitaldb.engine.errors import report
from hospitaldb.record.audit_schema import AuditSchemaNotUpgradable, upgrade_schema
from hospitaldb.record.outcome import RunOutcome, StepStatus
from hospitaldb.text import safe

if TYPE_CHECKING:
    from hospitaldb.engine.checks import CheckResult
    from hospitaldb.engine.lineage import Lineage
    from hospitaldb.engine.source_checks import SourceState
    from hospitaldb.engine.sql_runner import StatementResult
    from hospitaldb.engine.upkeep import Upkeep

ERROR_LENGTH = 1000
# Bookkeeping must never hold up the refresh: the audit session's limits are the run's, at most this.
AUDIT_LIMIT_SECONDS = 10
AUDIT_LIMITS = Limits(AUDIT_LIMIT_SECONDS, AUDIT_LIMIT_SECONDS)


class AuditLog:
    """Reads and writes etl_audit rows; every method returns quietly once auditing is off.

    With writes=False (a dry run) it only reads: a dry run publishes nothing and records nothing.
    """

    def __init__(
        self,
        target: DatabaseTarget,
        logger: logging.Logger | logging.LoggerAdapter,
        limits: Limits = AUDIT_LIMITS,
        writes: bool = True,
    ) -> None:
        self._target = target
        self._logger = logger
        self._limits = limits.at_most(AUDIT_LIMIT_SECONDS)
        self._writes = writes
        self._connection: Any = None
        self._off = False

    def _session(self) -> Any:
        """The audit session, creating or upgrading the etl_audit schema on first use."""
        if self._connection is None:
            self._connection = self._target.connect(self._limits, purpose="audit", autocommit=True)
            upgrade_schema(self._connection)
        return self._connection

    def _execute(self, statement: str, params: Any = (), *, many: bool = False, write: bool = True) -> Any:
        """Run one statement (once per row of params, with many); return its rows, or None when
        auditing is off (or it writes and this log may not). A database error switches auditing off."""
        if self._off or (write and not self._writes):
            return None
        try:
            with self._session().cursor() as cursor:
                if many:
                    psycopg2.extras.execute_batch(cursor, statement, params)
                else:
                    cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else None
        except (psycopg2.Error, AuditSchemaNotUpgradable) as error:
            self._logger.warning(
                "audit trail not written (%s); the refresh goes on without it",
                str(error) if isinstance(error, AuditSchemaNotUpgradable) else report(error).text,
            )
            self._off = True
            self.close()
            return None

    def read(self, statement: str, params: Any = ()) -> list[tuple[Any, ...]]:
        """The rows a statement returns; none when auditing is off (hospitaldb.record.audit_history)."""
        return self._execute(statement, params, write=False) or []

    def _rows_of_run(self, flow_run_id: str | None, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """Write rows filed under a flow run; outside a flow run there is none to file them under."""
        if flow_run_id is not None and rows:
            self._execute(statement, rows, many=True)

    @property
    def database(self) -> str:
        return self._target.describe()

    @property
    def available(self) -> bool:
        """etl_audit can be read (created or upgraded if needed); False, with a warning logged, if not."""
        self.read("SELECT 1")
        return not self._off

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
        so any other 'running' row belongs to a process that died without recording it.
        """
        rows = self._execute(
            "WITH stale AS ("
            "  UPDATE etl_audit.refresh_runs AS r SET status = 'abandoned', outcome = 'abandoned',"
            "         finished_at = now(),"
            "         failed_step = (SELECT a.step FROM etl_audit.step_attempts AS a"
            "                        WHERE a.flow_run_id = r.flow_run_id AND a.status = 'running'"
            "                        ORDER BY a.attempt_id DESC LIMIT 1),"
            "         error = 'abandoned: still running when run ' || %s || ' took the refresh lock at ' || now()"
            "  WHERE r.status = 'running' AND r.flow_run_id <> %s RETURNING r.flow_run_id"
            "), attempts AS ("
            "  UPDATE etl_audit.step_attempts AS a SET status = 'abandoned', finished_at = now(),"
            "         duration_seconds = extract(epoch FROM now() - a.started_at)"
            "  FROM stale WHERE a.flow_run_id = stale.flow_run_id AND a.status = 'running'"
            ") SELECT count(*) FROM stale",
            (flow_run_id, flow_run_id),
        )
        return rows[0][0] if rows else 0

    # --- Steps, statements, checks, objects, sources ----------------------------------------

    def attempt_started(self, flow_run_id: str | None, step: str, attempt: int) -> int | None:
        if flow_run_id is None:
            return None
        rows = self._execute(
            "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt) VALUES (%s, %s, %s) "
            "RETURNING attempt_id",
            (flow_run_id, step, attempt),
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
        self, flow_run_id: str | None, row_counts: dict[str, int], changes: dict[str, dict[str, int]]
    ) -> None:
        """Each object's rows after its step committed, and what the step inserted, updated, deleted."""
        self._rows_of_run(
            flow_run_id,
            "UPDATE etl_audit.run_objects SET row_count = %s, inserted = %s, updated = %s, deleted = %s "
            "WHERE flow_run_id = %s AND object_name = %s",
            [
                (
                    row_counts.get(name),
                    counts["inserted"],
                    counts["updated"],
                    counts["deleted"],
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

    # --- The freshness check ----------------------------------------------------------------

    def freshness_alert_sent(self, stale_steps: list[str]) -> None:
        self._execute("INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES (%s)", (stale_steps,))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _stored(error: str | None) -> str | None:
    """Errors are stored as they would be shown: redacted and cut to length."""
    return safe(error, ERROR_LENGTH) if error else None
