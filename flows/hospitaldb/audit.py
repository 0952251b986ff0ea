"""The audit trail in the HospitalDB itself (schema etl_audit), written best-effort.

Every statement that reads or writes etl_audit from Python is here; the named
monitoring queries over it are in sql/monitoring/.

Rows go through a separate autocommit session, so a step that rolls back still
leaves its attempt and statements on record. Any failure to write (no privilege,
schema missing and not creatable, a full disk) is logged once and switches the
audit off for this writer: auditing never fails the refresh.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg2

from hospitaldb.database import APPLICATION_NAME, DatabaseTarget
from hospitaldb.errors import postgres_message
from hospitaldb.sql_runner import StatementResult
from hospitaldb.sql_script import load_statements
from hospitaldb.steps import SQL_DIR
from hospitaldb.text import safe

ERROR_LENGTH = 1000

AUDIT_SCHEMA_FILE = SQL_DIR / "schema" / "05_etl_audit.sql"


class AuditLog:
    """Writes etl_audit rows; every method returns quietly if auditing is off."""

    def __init__(self, target: DatabaseTarget, logger: logging.Logger | logging.LoggerAdapter) -> None:
        self._target = target
        self._logger = logger
        self._connection: Any = None
        self._off = False

    def _session(self) -> Any:
        """The audit session, creating the etl_audit schema on first use if it is missing."""
        if self._connection is None:
            self._connection = self._target.connect(
                application_name=f"{APPLICATION_NAME}-audit",
                statement_timeout_seconds=10,
                lock_timeout_seconds=5,
                autocommit=True,
            )
            with self._connection.cursor() as cursor:
                cursor.execute("SELECT to_regclass('etl_audit.statement_runs') IS NULL")
                if cursor.fetchone()[0]:
                    for schema_statement in load_statements(AUDIT_SCHEMA_FILE):
                        cursor.execute(schema_statement.text)
        return self._connection

    def _execute(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        if self._off:
            return None
        try:
            with self._session().cursor() as cursor:
                cursor.execute(statement, params)
                return cursor.fetchone()[0] if cursor.description else None
        except psycopg2.Error as error:
            self._logger.warning(
                "audit trail not written (%s); the refresh goes on without it", postgres_message(error)
            )
            self._off = True
            self.close()
            return None

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
        return self._execute(
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

    def run_crashed(self, flow_run_id: Any, error: str) -> None:
        self.run_finished(flow_run_id, "crashed", error)
        self._execute(
            "UPDATE etl_audit.step_attempts SET status = 'crashed', finished_at = now(), "
            "duration_seconds = extract(epoch FROM now() - started_at), error = %s "
            "WHERE flow_run_id = %s AND status = 'running'",
            (_stored(error), str(flow_run_id)),
        )

    def last_freshness_alert(self, within_hours: float) -> Any:
        """When the freshness check last alerted within the given hours, or None."""
        return self._execute(
            "SELECT max(sent_at) FROM etl_audit.freshness_alerts "
            "WHERE sent_at > now() - make_interval(secs => %s)",
            (within_hours * 3600,),
        )

    def freshness_alert_sent(self, stale_steps: list[str]) -> None:
        self._execute("INSERT INTO etl_audit.freshness_alerts (stale_steps) VALUES (%s)", (stale_steps,))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def _stored(error: str | None) -> str | None:
    """Errors are stored as they would be shown: redacted and cut to length."""
    return safe(error, ERROR_LENGTH) if error else None


def record_crash(flow: Any, flow_run: Any, state: Any) -> None:
    """on_crashed hook: mark the run and its unfinished attempts as crashed."""
    from prefect.logging.loggers import flow_run_logger

    from hospitaldb.database import resolve_database

    logger = flow_run_logger(flow_run=flow_run, flow=flow)
    try:
        target = resolve_database((flow_run.parameters or {}).get("database_block"))
    except Exception as error:  # no database, no audit: say so and move on
        logger.warning("audit trail not updated for the crash: %s", error)
        return
    audit = AuditLog(target, logger)
    try:
        audit.run_crashed(flow_run.id, state.message or state.name)
    finally:
        audit.close()
