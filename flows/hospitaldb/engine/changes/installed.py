"""Whether the change capture installed in the database is the one incremental/capture.sql asks for.

capture.sql is the team's SQL and changes with it: a source's keys, or the columns a step adds up
by delta (its third column, sums). What is installed changes only when an administrator runs
`hospitaldb changes install` again. Until then an incremental form could read keys or sums the
triggers do not log, so the step runs full, and says why. Read in the step's own transaction.
"""

from __future__ import annotations

from typing import Any

# Executed as is: 1.9.0's install has no etl_changes.capture_of (and logs no sums).
CAPTURE_OF_USABLE = """
SELECT coalesce(has_function_privilege(to_regprocedure('etl_changes.capture_of(text[])'), 'EXECUTE'), false)
"""

Columns = tuple[tuple[str, ...], tuple[str, ...]]  # keys, sums


def installed_capture(
    cursor: Any, sources: list[str], keys: dict[str, tuple[str, ...]]
) -> dict[str, Columns]:
    """Each captured source's key and summed columns as installed; keys: what pending_changes reported."""
    cursor.execute(CAPTURE_OF_USABLE)
    if not cursor.fetchone()[0]:
        return {source: (keys[source], ()) for source in keys}
    cursor.execute("SELECT source, keys, sums FROM etl_changes.capture_of(%s)", (sources,))
    return {source: (tuple(keys), tuple(sums)) for source, keys, sums in cursor.fetchall()}


def capture_behind(cursor: Any, capture_sql: str, installed: dict[str, Columns]) -> str | None:
    """Why the installed capture of these sources is not what capture.sql asks for; None: it is."""
    cursor.execute(capture_sql)
    wanted: dict[str, Columns] = {}
    for source, keys, *summed in cursor.fetchall():
        cursor.execute(
            "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class AS c "
            "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
            (source,),
        )
        found = cursor.fetchone()
        if found:
            wanted[found[0]] = (tuple(keys or ()), tuple(summed[0] or ()) if summed else ())
    behind = sorted(source for source, columns in installed.items() if wanted.get(source, columns) != columns)
    if not behind:
        return None
    return (
        f"the change capture installed for {', '.join(behind)} is not what incremental/capture.sql "
        "asks for now (other keys or sums): run `hospitaldb changes install` again"
    )
