"""The shrink guard's counts: each refreshed object's rows before and after its step, in its transaction.

sql/checks/all_steps/shrink_guard.sql reads them (pg_temp.refresh_row_counts), with the
run's allow_shrink and max_shrink_share as settings of the transaction, and refuses a
step that would lose more than that share of an object's rows, or all of them. The
counts after the step are also what etl_audit records as each object's rows.

Each object is counted once, after the step: a table's rows before are its rows after less what
the step inserted and plus what it deleted, as PostgreSQL counts them for the transaction (at 10M
visits each count of the analytics tables takes seconds). Not where those counters miss rows: a
materialized view (a plain REFRESH swaps its storage), a partitioned table (they count per
partition), or a step that may TRUNCATE. Those are counted before, too.

On an incremental night a table the step did not shrink (it inserted at least as many rows as it
deleted) is not counted at all: the guard cannot refuse it, and counting would cost the whole
history for a night's change. Its rows are then unknown (None; etl_audit records no row_count).
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
    truncates: bool = False,
) -> None:
    """Record, at the start of the step, the rows of each refreshed object its counters cannot tell.

    truncates: the step may TRUNCATE, which its counters do not see: every object is counted.
    """
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
        for name, table in _existing(cursor, objects):
            if table and not truncates:  # its rows before: from its rows after (finish_row_counts)
                cursor.execute("INSERT INTO pg_temp.refresh_row_counts VALUES (%s, NULL)", (name,))
                continue
            cursor.execute(
                sql.SQL("INSERT INTO pg_temp.refresh_row_counts SELECT %s, count(*) FROM {}").format(
                    sql.Identifier(*name.split("."))
                ),
                (name,),
            )


def finish_row_counts(
    connection: psycopg2.extensions.connection,
    changes: dict[str, dict[str, int]],
    *,
    incremental: bool = False,
) -> dict[str, int | None]:
    """Count each object's rows now that the step has written them; changes: what the step did to each.

    incremental: leave uncounted a table the step did not shrink (its rows: None).
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT object_name, rows_before IS NULL FROM pg_temp.refresh_row_counts ORDER BY 1")
        for name, derived in cursor.fetchall():
            counts = changes.get(name, {})
            if incremental and derived and counts.get("inserted", 0) >= counts.get("deleted", 0):
                continue
            cursor.execute(
                sql.SQL(
                    "UPDATE pg_temp.refresh_row_counts SET rows_after = (SELECT count(*) FROM {}) "
                    "WHERE object_name = %s"
                ).format(sql.Identifier(*name.split("."))),
                (name,),
            )
            cursor.execute(
                "UPDATE pg_temp.refresh_row_counts SET rows_before = rows_after - %s "
                "WHERE object_name = %s AND rows_before IS NULL",
                (counts.get("inserted", 0) - counts.get("deleted", 0), name),
            )
        cursor.execute("SELECT object_name, rows_after FROM pg_temp.refresh_row_counts ORDER BY 1")
        return dict(cursor.fetchall())


def _existing(cursor: Any, objects: list[str]) -> list[tuple[str, bool]]:
    """Each object that exists, and whether it is a plain table (whose row counters are exact)."""
    cursor.execute(
        "SELECT name, c.relkind = 'r' FROM unnest(%s::text[]) WITH ORDINALITY AS o (name, position) "
        "JOIN pg_class AS c ON c.oid = to_regclass(name) ORDER BY position",
        (objects,),
    )
    return cursor.fetchall()
