"""The audit trail in the HospitalDB itself (schema etl_audit), written best-effort.

Every statement that reads or writes etl_audit from Python is here; the named
monitoring queries over it are in sql/monitoring/.

Rows go through a separate autocommit session, so a step that rolls back still
leaves its attempt and statements on record. Any failure to write (no privilege,
schema missing and not creatable, a full disk) is logged once and switches the
audit off for this writer: auditing never fails the refresh.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING, Any

import psycopg2
import psycopg2.extras

from hospitaldb.database import APPLICATION_NAME, DatabaseTarget
from hospitaldb.errors import postgres_message
from hospitaldb.sql_runner import StatementResult
from hospitaldb.sql_script import load_statements
from hospitaldb.steps import SQL_DIR
from hospitaldb.text import safe

if TYPE_CHECKING:
    from hospitaldb.checks import CheckResult
    from hospitaldb.source_checks import SourceState

ERROR_LENGTH = 1000

AUDIT_SCHEMA_FILE = SQL_DIR / "schema" / "05_etl_audit.sql"


class AuditLog:
    """Writes etl_audit rows; every method returns quietly if auditing is off."""

    def __init__(
        self, target: DatabaseTarget, logger: logging.Logger | logging.LoggerAdapter, enabled: bool = True
    ) -> None:
        self._target = target
        self._logger = logger
        self._connection: Any = None
        self._off = not enabled

    def _session(self) -> Any:
        """The audit session, creating or upgrading the etl_audit schema on first use."""
        if self._connection is None:
            self._connection = self._target.connect(
                application_name=f"{APPLICATION_NAME}-audit",
                statement_timeout_seconds=10,
                lock_timeout_seconds=5,
                autocommit=True,
            )
            upgrade_schema(self._connection)
        return self._connection

    def _execute(self, statement: str, params: Any = (), *, many: bool = False) -> Any:
        """Run one statement (once per row of params, with many); return the rows it returned.

        Returns None when auditing is off, and switches it off on any database error.
        """
        if self._off:
            return None
        try:
            with self._session().cursor() as cursor:
                if many:
                    psycopg2.extras.execute_batch(cursor, statement, params)
                else:
                    cursor.execute(statement, params)
                return cursor.fetchall() if cursor.description else None
        except psycopg2.Error as error:
            self._logger.warning(
                "audit trail not written (%s); the refresh goes on without it", postgres_message(error)
            )
            self._off = True
            self.close()
            return None

    def _rows_of_run(self, flow_run_id: Any, statement: str, rows: list[tuple[Any, ...]]) -> None:
        """Write rows filed under a flow run; outside a flow run there is none to file them under."""
        if flow_run_id is not None and rows:
            self._execute(statement, rows, many=True)

    def _value(self, statement: str, params: Any = ()) -> Any:
        rows = self._execute(statement, params)
        return rows[0][0] if rows else None

    def ensure_schema(self) -> bool:
        """Create etl_audit if missing; False (with a warning logged) if that is not possible."""
        self._execute("SELECT 1")
        return not self._off

    def run_started(self, flow_run_id: Any, name: str, deployment: str | None, steps: list[str]) -> None:
        self._execute(
            "INSERT INTO etl_audit.refresh_runs (flow_run_id, flow_run_name, deployment, steps) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (flow_run_id) DO UPDATE SET status = 'running', "
            "started_at = now(), finished_at = NULL, error = NULL",
            (str(flow_run_id), name, deployment, steps),
        )

    def run_finished(self, flow_run_id: Any, status: str, error: str | None = None) -> None:
        self._execute(
            "UPDATE etl_audit.refresh_runs SET status = %s, error = %s, finished_at = now() WHERE flow_run_id = %s",
            (status, _stored(error), str(flow_run_id)),
        )

    def attempt_started(self, flow_run_id: Any, step: str, attempt: int) -> int | None:
        return self._value(
            "INSERT INTO etl_audit.step_attempts (flow_run_id, step, attempt) VALUES (%s, %s, %s) "
            "RETURNING attempt_id",
            (str(flow_run_id), step, attempt),
        )

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
        status: str,
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
            (status, statements, rows, sqlstate, _stored(error), attempt_id),
        )

    def run_interrupted(self, flow_run_id: Any, status: str, error: str) -> None:
        """The run was 'crashed' (killed) or 'cancelled': so are its unfinished attempts."""
        self._execute(
            "UPDATE etl_audit.refresh_runs SET status = %s, error = %s, finished_at = now() "
            "WHERE flow_run_id = %s AND status = 'running'",
            (status, _stored(error), str(flow_run_id)),
        )
        self._execute(
            "UPDATE etl_audit.step_attempts SET status = %s, finished_at = now(), "
            "duration_seconds = extract(epoch FROM now() - started_at), error = %s "
            "WHERE flow_run_id = %s AND status = 'running'",
            (status, _stored(error), str(flow_run_id)),
        )

    def abandon_stale_runs(self, flow_run_id: Any) -> int:
        """Mark other runs still 'running' as abandoned; return how many.

        Called once this run holds the refresh lock: no other refresh can be running then,
        so any other 'running' row belongs to a process that died without recording it.
        """
        rows = self._execute(
            "WITH stale AS ("
            "  UPDATE etl_audit.refresh_runs SET status = 'abandoned', finished_at = now(),"
            "         error = 'abandoned: still running when run ' || %s || ' took the refresh lock at ' || now()"
            "  WHERE status = 'running' AND flow_run_id <> %s RETURNING flow_run_id"
            "), attempts AS ("
            "  UPDATE etl_audit.step_attempts AS a SET status = 'abandoned', finished_at = now(),"
            "         duration_seconds = extract(epoch FROM now() - a.started_at)"
            "  FROM stale WHERE a.flow_run_id = stale.flow_run_id AND a.status = 'running'"
            ") SELECT count(*) FROM stale",
            (str(flow_run_id), str(flow_run_id)),
        )
        return rows[0][0] if rows else 0

    def last_freshness_alert(self, within_hours: float) -> Any:
        """When the freshness check last alerted within the given hours, or None."""
        return self._value(
            "SELECT max(sent_at) FROM etl_audit.freshness_alerts "
            "WHERE sent_at > now() - make_interval(secs => %s)",
            (within_hours * 3600,),
        )

    def freshness_alert_sent(self, stale_steps: list[str]) -> None:
        self._execute("INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES (%s)", (stale_steps,))

    def objects_planned(self, flow_run_id: Any, objects: dict[str, str]) -> None:
        """What this run's steps refresh (object -> step)."""
        self._rows_of_run(
            flow_run_id,
            "INSERT INTO etl_audit.run_objects (flow_run_id, step, object_name) VALUES (%s, %s, %s) "
            "ON CONFLICT DO NOTHING",
            [(str(flow_run_id), step, name) for name, step in objects.items()],
        )

    def objects_refreshed(
        self, flow_run_id: Any, row_counts: dict[str, int], changes: dict[str, dict[str, int]]
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
                    str(flow_run_id),
                    name,
                )
                for name, counts in changes.items()
            ],
        )

    def checks_finished(
        self, flow_run_id: Any, attempt_id: int | None, step: str, results: list[CheckResult]
    ) -> None:
        self._rows_of_run(
            flow_run_id,
            "INSERT INTO etl_audit.check_results (flow_run_id, attempt_id, step, check_name, source_file, "
            "severity, outcome, violating_rows, duration_seconds, detail) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    str(flow_run_id),
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

    def sources_read(self, flow_run_id: Any, states: list[SourceState]) -> None:
        self._rows_of_run(
            flow_run_id,
            "INSERT INTO etl_audit.source_counts (flow_run_id, source, row_count, newest) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (flow_run_id, source) DO UPDATE "
            "SET row_count = excluded.row_count, newest = excluded.newest, checked_at = now()",
            [(str(flow_run_id), state.source, state.row_count, state.newest) for state in states],
        )

    def last_successful_source_counts(self) -> dict[str, int]:
        """Each source's row count at the last completed run that recorded one."""
        rows = self._execute(
            "SELECT source, row_count FROM etl_audit.source_counts WHERE flow_run_id = ("
            "  SELECT r.flow_run_id FROM etl_audit.refresh_runs AS r"
            "  WHERE r.status = 'completed'"
            "    AND EXISTS (SELECT FROM etl_audit.source_counts AS s WHERE s.flow_run_id = r.flow_run_id)"
            "  ORDER BY r.finished_at DESC LIMIT 1)"
        )
        return dict(rows or [])

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def upgrade_schema(connection: Any) -> None:
    """Create etl_audit, or bring an existing one up to sql/schema/05_etl_audit.sql, in place.

    The schema's comment holds a digest of the file it was built from; when the file
    changes (a new table, a new view), the next run applies it again. Every statement
    in it is idempotent (IF NOT EXISTS, OR REPLACE), so existing rows stay. An
    advisory lock keeps two runs from upgrading at once.
    """
    digest = hashlib.sha256(AUDIT_SCHEMA_FILE.read_bytes()).hexdigest()[:16]
    marker = f"hospitaldb-refresh audit trail, schema {digest}"
    with connection.cursor() as cursor:
        cursor.execute("SELECT obj_description(to_regnamespace('etl_audit'), 'pg_namespace')")
        if cursor.fetchone()[0] == marker:
            return
    connection.autocommit = False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", ("hospitaldb-etl-audit",))
            for statement in load_statements(AUDIT_SCHEMA_FILE):
                cursor.execute(statement.text)
            cursor.execute("COMMENT ON SCHEMA etl_audit IS %s", (marker,))
        connection.commit()
    finally:
        if not connection.closed:
            connection.rollback()
        connection.autocommit = True


def _stored(error: str | None) -> str | None:
    """Errors are stored as they would be shown: redacted and cut to length."""
    return safe(error, ERROR_LENGTH) if error else None


def record_interruption(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed and on_cancellation hook: mark the run and its unfinished attempts.

    A cancelled run (from the UI, the CLI or an automation) becomes 'cancelled'; a killed
    one 'crashed'. With a worker, Prefect runs the cancellation hook in the worker's own
    process, after the run's process is gone.
    """
    from prefect.logging.loggers import flow_run_logger

    from hospitaldb.database import resolve_database

    logger = flow_run_logger(flow_run=flow_run, flow=flow)
    try:
        target = resolve_database((flow_run.parameters or {}).get("database_block"))
    except Exception as error:  # no database, no audit: say so and move on
        logger.warning("audit trail not updated for the %s run: %s", state.name.lower(), error)
        return
    audit = AuditLog(target, logger)
    cancelled = state.is_cancelled() or state.is_cancelling()
    try:
        audit.run_interrupted(
            flow_run.id, "cancelled" if cancelled else "crashed", state.message or state.name
        )
    finally:
        audit.close()
