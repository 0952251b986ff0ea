"""Run the named monitoring queries of sql/monitoring/ and return their rows as dicts."""

from __future__ import annotations

from typing import Any

import psycopg2.extras

from hospitaldb.engine.db.database import DatabaseTarget
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.sql.script import load_statements
from hospitaldb.paths import PROJECT_SQL_DIR

MONITORING_DIR = PROJECT_SQL_DIR / "monitoring"


def monitoring_queries() -> list[str]:
    return sorted(path.stem for path in MONITORING_DIR.glob("*.sql"))


def run_monitoring_query(target: DatabaseTarget, name: str) -> list[dict[str, Any]]:
    """Rows of sql/monitoring/<name>.sql, read-only, on a short-lived session."""
    if name not in monitoring_queries():
        raise ValueError(f"no monitoring query '{name}'; choose from {monitoring_queries()}")
    (statement,) = load_statements(MONITORING_DIR / f"{name}.sql", f"sql/monitoring/{name}.sql")
    connection = target.connect(Limits(statement_timeout_seconds=60), purpose="monitor")
    try:
        connection.set_session(readonly=True)
        with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
            cursor.execute(statement.text)
            return [dict(row) for row in cursor.fetchall()]
    finally:
        connection.close()
