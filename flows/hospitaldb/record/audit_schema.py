"""etl_audit created, or upgraded in place, from sql/schema/05_etl_audit.sql.

Users already run this: their etl_audit holds history that must survive every new
version. The schema's comment records a digest of the file it was built from; when
the file changes, the next run applies it again. Every statement in it is
idempotent (IF NOT EXISTS, OR REPLACE, backfills of NULL columns only), so existing
rows stay.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import psycopg2.errors

from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.paths import PROJECT_SQL_DIR

AUDIT_SCHEMA_FILE = PROJECT_SQL_DIR / "schema" / "05_etl_audit.sql"


# An upgrade's ALTERs wait for any session reading etl_audit (a reader's open transaction, a
# `LOCK TABLE etl_audit.data_status`), and while they wait every audit write queues behind them.
# So each try waits briefly, gives way, and tries again.
LOCK_WAIT_SECONDS = 2.0
TRIES = 30


class AuditSchemaNotUpgradable(RuntimeError):
    """etl_audit is at another version and this role may not change it (the least-privilege roles)."""


def upgrade_schema(
    connection: Any, files: SqlFiles, lock_wait_seconds: float = LOCK_WAIT_SECONDS, tries: int = TRIES
) -> None:
    """Bring etl_audit up to the file, in one transaction; an advisory lock keeps two runs apart.

    files: the run's SQL files, so that a run parses this one once (its lineage reads it too).
    A lock it cannot get within lock_wait_seconds is given back and asked for again, up to
    tries times, so that no audit write waits behind it for long.
    """
    for attempt in range(1, tries + 1):
        try:
            return _upgrade_once(connection, files, lock_wait_seconds)
        except psycopg2.errors.LockNotAvailable:
            if attempt == tries:
                raise AuditSchemaNotUpgradable(
                    f"etl_audit could not be upgraded: another session held a lock on its tables through "
                    f"{tries} tries of {lock_wait_seconds:g} s (a reader's open transaction?). "
                    "See etl_audit's locks in pg_locks; the next run tries again"
                ) from None
            time.sleep(min(attempt, 5) * lock_wait_seconds / 2)


def _upgrade_once(connection: Any, files: SqlFiles, lock_wait_seconds: float) -> None:
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
            cursor.execute(
                "SELECT set_config('lock_timeout', %s, true)", (f"{int(lock_wait_seconds * 1000)}ms",)
            )
            for statement in files.load(AUDIT_SCHEMA_FILE).statements:
                cursor.execute(statement.text)
            cursor.execute("COMMENT ON SCHEMA etl_audit IS %s", (marker,))
        connection.commit()
    except psycopg2.errors.InsufficientPrivilege:
        raise AuditSchemaNotUpgradable(
            "etl_audit is missing or older than this version's sql/schema/05_etl_audit.sql, and this role "
            "may not create or change it: run `python deployments/create_roles.py` as an administrator "
            "(docs/security.md, 'Least privilege')"
        ) from None
    finally:
        if not connection.closed:
            connection.rollback()
        connection.autocommit = True
