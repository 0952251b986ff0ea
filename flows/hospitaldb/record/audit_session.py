"""The audit trail's session: one autocommit connection per run, and what happens when it fails.

Rows go through one autocommit session per run, so a step that rolls back still
leaves its attempt and statements on record. A session lost to a restart or a failover is
opened again, for a few seconds (a multi-host URL finds the new primary). Any failure to write (no privilege,
schema missing and not creatable, a full disk) is logged once and switches the
audit off for this writer: auditing never fails the refresh. The rows themselves
are written in hospitaldb.record.audit.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg2
import psycopg2.extras

from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.db.transient import is_transient
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.record.audit_schema import AuditSchemaNotUpgradable, upgrade_schema

# Bookkeeping must never hold up the refresh: the audit session's limits are the run's, at most this.
AUDIT_LIMIT_SECONDS = 10
AUDIT_LIMITS = Limits(AUDIT_LIMIT_SECONDS, AUDIT_LIMIT_SECONDS)
# A lost session is opened again after these pauses (a standby takes seconds to be promoted).
REOPEN_DELAYS = (0.5, 2.0, 4.0)


AUDIT_PURPOSE = "audit"  # the session's application_name: hospitaldb-refresh-audit[-RUN_ID]


class AuditSession:
    """A session to etl_audit; every statement returns quietly once auditing is off.

    With writes=False (a dry run) it only reads: a dry run publishes nothing and records nothing.
    """

    def __init__(
        self,
        target: DatabaseTarget,
        logger: logging.Logger | logging.LoggerAdapter,
        files: SqlFiles,
        limits: Limits = AUDIT_LIMITS,
        writes: bool = True,
        run_id: str | None = None,
    ) -> None:
        self._target = target
        # The session names the run it records: while it is open, that run is alive (see
        # AuditLog.abandon_stale_runs), even between releasing the refresh lock and its last write.
        self._purpose = f"{AUDIT_PURPOSE}-{run_id}" if run_id else AUDIT_PURPOSE
        self._logger = logger
        self._limits = limits.at_most(AUDIT_LIMIT_SECONDS)
        self._writes = writes
        self._files = files  # the run's SQL files: the schema file is parsed once per run
        self._connection: Any = None
        self._off = False

    def _session(self) -> Any:
        """The audit session, creating or upgrading the etl_audit schema on first use."""
        if self._connection is None:
            self._connection = self._target.connect(self._limits, purpose=self._purpose, autocommit=True)
            upgrade_schema(self._connection, self._files)
        return self._connection

    def _execute(self, statement: str, params: Any = (), *, many: bool = False, write: bool = True) -> Any:
        """Run one statement (once per row of params, with many); return its rows, or None when
        auditing is off (or it writes and this log may not). A database error switches auditing off."""
        if self._off or (write and not self._writes):
            return None
        try:
            return self._run_or_reopen(statement, params, many)
        except (psycopg2.Error, AuditSchemaNotUpgradable) as error:
            self._logger.warning(
                "audit trail not written (%s); the refresh goes on without it",
                str(error) if isinstance(error, AuditSchemaNotUpgradable) else report(error).text,
            )
            self._off = True
            self.close()
            return None

    def _run_or_reopen(self, statement: str, params: Any, many: bool) -> Any:
        """Run it; when the session was lost (a restart, a failover), on a new one, for a few seconds."""
        for delay in (*REOPEN_DELAYS, None):
            try:
                return self._run(statement, params, many)
            except psycopg2.Error as error:
                lost = self._connection is None or bool(self._connection.closed)
                if delay is None or not (is_transient(error) and lost):
                    raise
                self.close()
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _run(self, statement: str, params: Any, many: bool) -> Any:
        with self._session().cursor() as cursor:
            if many:
                psycopg2.extras.execute_batch(cursor, statement, params)
            else:
                cursor.execute(statement, params)
            return cursor.fetchall() if cursor.description else None

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

    @property
    def failed(self) -> bool:
        """A write (or read) failed: auditing is off for this writer, with a warning logged."""
        return self._off

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
