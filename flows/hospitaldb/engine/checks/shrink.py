"""The shrink guard's counts: each refreshed object's rows before and after its step, in its transaction.

sql/checks/all_steps/shrink_guard.sql reads them (pg_temp.refresh_row_counts), with the
run's allow_shrink and max_shrink_share as settings of the transaction, and refuses a
step that would lose more than that share of an object's rows, or all of them. The
counts after the step are also what etl_audit records as each object's rows.
"""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
from psycopg2 import sql


def start_row_counts(
    connection: psycopg2.extensions.connection,
    objects: list[str],
    *,
    allow_shrink: bool,
    max_shrink_share: float,
) -> None:
    """Record each refreshed object's rows at the start of the step, in its transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hospitaldb.allow_shrink', %s, true),"
            "       set_config('hospitaldb.max_shrink_share', %s, true)",
            (str(allow_shrink).lower(), str(max_shrink_share)),
        )
        # A dry run runs every step in one transaction: the previous step's table is still there.
        cursor.execute("DROP TABLE IF EXISTS pg_temp.refresh_row_counts")
        cursor.execute(
            "CREATE TEMP TABLE refresh_row_counts (object_name text PRIMARY KEY, rows_before bigint, "
            "rows_after bigint) ON COMMIT DROP"
        )
        for name in _existing(cursor, objects):
            cursor.execute(
                sql.SQL("INSERT INTO pg_temp.refresh_row_counts SELECT %s, count(*) FROM {}").format(
                    sql.Identifier(*name.split("."))
                ),
                (name,),
            )


def finish_row_counts(connection: psycopg2.extensions.connection) -> dict[str, Any]:
    """Count each object's rows again, now that the step has written them."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT object_name FROM pg_temp.refresh_row_counts ORDER BY 1")
        for (name,) in cursor.fetchall():
            cursor.execute(
                sql.SQL(
                    "UPDATE pg_temp.refresh_row_counts SET rows_after = (SELECT count(*) FROM {}) "
                    "WHERE object_name = %s"
                ).format(sql.Identifier(*name.split("."))),
                (name,),
            )
        cursor.execute("SELECT object_name, rows_after FROM pg_temp.refresh_row_counts ORDER BY 1")
        return dict(cursor.fetchall())


def _existing(cursor: Any, objects: list[str]) -> list[str]:
    cursor.execute(
        "SELECT name FROM unnest(%s::text[]) AS name WHERE to_regclass(name) IS NOT NULL", (objects,)
    )
    return [row[0] for row in cursor.fetchall()]
