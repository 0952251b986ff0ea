"""Change capture, installed once by an administrator: triggers on the steps' sources that log changed keys.

What is captured is the team's SQL, `incremental/capture.sql` beside the step files (one SELECT
of source and keys), so another warehouse captures its own tables with no Python edited. Each
source gets four statement-level AFTER triggers, one per event, with transition tables
(REFERENCING OLD TABLE / NEW TABLE): INSERT and DELETE log their rows' keys, UPDATE the old and
the new (a payment moved to another bill logs both), TRUNCATE records that the next run must be
full. A source may also list summed columns (capture.sql's sums): each row is then logged with
its side (+1 new, -1 old) and those columns, so a step moves a large group's totals by a delta.
They call etl_changes' functions (sql/changes/etl_changes.sql: SECURITY DEFINER, the
owner's, pinned search_path), so a loader needs no grant on the logs, and are ENABLE ALWAYS, so
a load in replica mode (session_replication_role = replica, as pg_restore and logical
replication run) is seen too. Installing is idempotent and converges: a source no longer listed
loses its triggers. CREATE TRIGGER takes a SHARE ROW EXCLUSIVE lock on each source for a moment
(loaders wait, readers do not).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg2 import sql

from hospitaldb.engine.sql.allowed import checked_read
from hospitaldb.engine.sql.script import SqlScriptError, load_statements
from hospitaldb.paths import PROJECT_SQL_DIR, display_path, step_sql_dir

CHANGES_SCHEMA_FILE = PROJECT_SQL_DIR / "changes" / "etl_changes.sql"
CAPTURE_FILE = Path("incremental", "capture.sql")  # beside the step files
TRIGGER_PREFIX = "hospitaldb_changes_"
# One trigger per event: transition tables are allowed only on a trigger for one event.
EVENTS = {
    "insert": sql.SQL("AFTER INSERT ON {table} REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT"),
    "update": sql.SQL(
        "AFTER UPDATE ON {table} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT"
    ),
    "delete": sql.SQL("AFTER DELETE ON {table} REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT"),
}
# What the refresher calls (`hospitaldb roles` grants it): what waits, and taking keys; never the logs.
REFRESHER_FUNCTIONS = """
SELECT p.oid::regprocedure::text FROM pg_proc AS p WHERE p.pronamespace = to_regnamespace('etl_changes')
AND p.proname IN ('pending_changes', 'last_full_refresh', 'take_changed_keys', 'take_all_changes', 'trim_taken',
                  'capture_of', 'logged_here')
"""
# Executed without parameters: its % are PostgreSQL's own.
OURS = """
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname, t.tgname FROM pg_trigger AS t
JOIN pg_class AS c ON c.oid = t.tgrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE t.tgname LIKE 'hospitaldb\\_changes\\_%' ORDER BY 1, 2, 3
"""


class CaptureNotInstallable(SqlScriptError):
    """capture.sql names something that cannot be captured; the message says what and how to fix it."""


@dataclass(frozen=True)
class Capture:
    """One source table and the key columns its triggers log; source as the triggers name it (schema.table)."""

    source: str
    schema: str
    table: str
    keys: tuple[str, ...]
    # Summed columns: logged with each row's side, so a step moves a group's totals by a delta.
    sums: tuple[str, ...] = ()

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    @property
    def log_table(self) -> str:
        """Where its triggers log its keys: etl_changes.<schema>__<table>."""
        return f"{self.schema}__{self.table}"


@dataclass(frozen=True)
class SourceStatus:
    source: str
    keys: tuple[str, ...]
    waiting: int  # changed keys still on record: some step has yet to take them
    truncated: bool  # a TRUNCATE since the last install: the next run must be full


def capture_file() -> Path:
    return step_sql_dir() / CAPTURE_FILE


def read_captures(cursor: Any, path: Path | None = None) -> list[Capture]:
    """What capture.sql asks for, checked against the catalog: each source a table, each key a column."""
    path = path or capture_file()
    if not path.exists():
        raise CaptureNotInstallable(
            f"{display_path(path)} is missing: it lists each source table and the key columns to capture "
            "(docs/your-warehouse.md)"
        )
    statements = load_statements(path, display_path(path))
    if len(statements) != 1:
        raise CaptureNotInstallable(f"{display_path(path)}: one SELECT of source and keys")
    statement = checked_read(statements[0])
    cursor.execute(statement.text)
    captures = []
    for source, keys, *summed in cursor.fetchall():
        sums = tuple(summed[0] or ()) if summed else ()
        cursor.execute(
            "SELECT c.relkind::text, format('%%I.%%I', n.nspname, c.relname), n.nspname, c.relname, "
            "       array(SELECT a.attname::text FROM pg_attribute AS a"
            "             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), "
            "       array(SELECT a.attname::text FROM pg_attribute AS a JOIN pg_type AS t ON t.oid = a.atttypid"
            "             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped"
            "               AND t.typcategory = 'N') "
            "FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE c.oid = to_regclass(%s) AND strpos(%s, '.') > 0",
            (source, source),
        )
        found = cursor.fetchone()
        kind, found = (found[0], found[1:]) if found else (None, None)
        if kind == "m":
            raise CaptureNotInstallable(
                f"{statement.location}: {source} is a materialized view here, and a view cannot be "
                "captured (no trigger sees what a refresh changes): make it a table the refresh "
                "maintains (the reference's upgrade: the CHANGELOG, 1.9.0), or leave it out and let "
                "the steps that read it run full"
            )
        if kind not in ("r", "p"):
            raise CaptureNotInstallable(
                f"{statement.location}: {source} is not a table here (write schema.table, as the steps do)"
            )
        name, schema, table, columns, numbers = found
        missing = sorted(set(keys or ()) - set(columns))
        if missing or not keys:
            raise CaptureNotInstallable(
                f"{statement.location}: {source} has no column {', '.join(missing) or '(no keys listed)'}"
            )
        not_summable = sorted(set(sums) - set(numbers))
        if not_summable:
            raise CaptureNotInstallable(
                f"{statement.location}: {source}: {', '.join(not_summable)} cannot be summed (no such "
                "numeric column): list a number column a step adds up, or none"
            )
        captures.append(Capture(name, schema, table, tuple(keys), sums))
    return captures


def install(connection: Any, owner: str | None = None) -> list[str]:
    """Create or upgrade etl_changes, put the triggers on every source, drop them where none is listed.

    One transaction: a loader sees all of it or none. owner: the role etl_changes is handed to
    (the NOLOGIN owner of `hospitaldb roles`); None keeps the administrator's.
    """
    ran: list[str] = []
    with connection.cursor() as cursor:

        def run(statement: sql.Composable) -> None:
            cursor.execute(statement)
            ran.append(statement.as_string(connection))

        cursor.execute("BEGIN")
        try:
            for statement in load_statements(CHANGES_SCHEMA_FILE):
                cursor.execute(statement.text)
            captures = read_captures(cursor)
            _drop_uncaptured(cursor, captures, run)
            for capture in captures:
                _install_log(cursor, capture, run)
                _install_triggers(capture, run)
            if owner:
                _hand_to(cursor, owner, run)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
    return ran


def _drop_uncaptured(cursor: Any, captures: list[Capture], run: Any) -> None:
    """Triggers and logs of sources capture.sql no longer lists: gone."""
    listed = [capture.source for capture in captures]
    cursor.execute(OURS)
    for source, schema, table, trigger in cursor.fetchall():
        if source not in listed:  # both as the catalog quotes them
            run(
                sql.SQL("DROP TRIGGER {} ON {}").format(
                    sql.Identifier(trigger), sql.Identifier(schema, table)
                )
            )
    cursor.execute("DELETE FROM etl_changes.captured WHERE source <> ALL (%s) RETURNING log_table", (listed,))
    for (log_table,) in cursor.fetchall():
        run(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier("etl_changes", log_table)))


def _install_log(cursor: Any, capture: Capture, run: Any) -> None:
    """The source's log table, typed as its columns; made anew (and the next run full) when they changed."""
    cursor.execute("SELECT keys, sums FROM etl_changes.captured WHERE source = %s", (capture.source,))
    found = cursor.fetchone()
    if found is not None and (tuple(found[0]), tuple(found[1])) == (capture.keys, capture.sums):
        return
    log = sql.Identifier("etl_changes", capture.log_table)
    if found is not None:  # the keys logged so far are not the keys asked for: a full run must follow
        run(sql.SQL("DROP TABLE IF EXISTS {}").format(log))
        cursor.execute("INSERT INTO etl_changes.truncated (source) VALUES (%s)", (capture.source,))
    # What changed before now was not logged: each step reading the source runs full once first.
    cursor.execute("INSERT INTO etl_changes.changes (source, whole) VALUES (%s, true)", (capture.source,))
    columns = sql.SQL(", ").join(
        [
            *(sql.SQL("t.{}").format(sql.Identifier(key)) for key in capture.keys),
            *([sql.SQL("0::smallint AS row_side")] if capture.sums else []),
            *(sql.SQL("t.{}").format(sql.Identifier(summed)) for summed in capture.sums),
        ]
    )
    run(
        sql.SQL("CREATE TABLE {} AS SELECT 0::bigint AS change_id, {} FROM {} AS t WITH NO DATA").format(
            log, columns, capture.identifier
        )
    )
    run(sql.SQL("CREATE INDEX ON {} USING brin (change_id)").format(log))
    cursor.execute(
        "INSERT INTO etl_changes.captured (source, keys, sums, log_table) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (source) DO UPDATE SET keys = excluded.keys, sums = excluded.sums, "
        "log_table = excluded.log_table",
        (capture.source, list(capture.keys), list(capture.sums), capture.log_table),
    )


def _hand_to(cursor: Any, owner: str, run: Any) -> None:
    """etl_changes, its tables and functions to owner: the SECURITY DEFINER functions run as it."""
    run(sql.SQL("ALTER SCHEMA etl_changes OWNER TO {}").format(sql.Identifier(owner)))
    cursor.execute(
        "SELECT c.relname, NULL FROM pg_class AS c WHERE c.relnamespace = 'etl_changes'::regnamespace "
        "AND c.relkind = 'r' UNION ALL SELECT NULL, p.oid::regprocedure::text FROM pg_proc AS p "
        "WHERE p.pronamespace = 'etl_changes'::regnamespace"
    )
    for table, function in cursor.fetchall():
        if table:
            run(
                sql.SQL("ALTER TABLE {} OWNER TO {}").format(
                    sql.Identifier("etl_changes", table), sql.Identifier(owner)
                )
            )
        else:  # regprocedure's text is PostgreSQL's own quoting of a function's name and arguments
            run(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(function), sql.Identifier(owner)))


def _install_triggers(capture: Capture, run: Any) -> None:
    table = capture.identifier
    arguments = (capture.log_table, *capture.keys, *(f"+{summed}" for summed in capture.sums))
    keys = sql.SQL(", ").join(sql.Literal(argument) for argument in arguments)
    for event, timing in EVENTS.items():
        name = sql.Identifier(f"{TRIGGER_PREFIX}{event}")
        run(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, table))
        run(
            sql.SQL("CREATE TRIGGER {} ").format(name)
            + timing.format(table=table)
            + sql.SQL(" EXECUTE FUNCTION etl_changes.log_changed_keys({})").format(keys)
        )
        run(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, name))
    name = sql.Identifier(f"{TRIGGER_PREFIX}truncate")
    run(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, table))
    run(
        sql.SQL(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION etl_changes.mark_truncated()"
        ).format(name, table)
    )
    run(sql.SQL("ALTER TABLE {} ENABLE ALWAYS TRIGGER {}").format(table, name))


def status(connection: Any) -> list[SourceStatus] | None:
    """Each captured source, its keys, how many changed keys wait, whether it was truncated; None: not installed."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_regclass('etl_changes.captured') IS NOT NULL "
            "AND EXISTS (SELECT FROM pg_trigger WHERE tgname LIKE 'hospitaldb\\_changes\\_%')"
        )
        if not cursor.fetchone()[0]:
            return None
        cursor.execute(
            "SELECT c.source, c.keys, "
            "       (SELECT count(*) FROM etl_changes.logged_keys(c.source)), "
            "       EXISTS (SELECT FROM etl_changes.truncated AS t WHERE t.source = c.source) "
            "FROM etl_changes.captured AS c ORDER BY c.source"
        )
        return [
            SourceStatus(source, tuple(keys), waiting, truncated)
            for source, keys, waiting, truncated in cursor
        ]


def refresher_grants(cursor: Any, refresher: str) -> list[sql.Composed]:
    """Where capture is installed: what the refresher needs to take a step's keys in its transaction."""
    cursor.execute(REFRESHER_FUNCTIONS)
    functions, role = sorted(row[0] for row in cursor.fetchall()), sql.Identifier(refresher)
    return [
        *([sql.SQL("GRANT USAGE ON SCHEMA etl_changes TO {}").format(role)] if functions else []),
        *(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(f), role) for f in functions),
    ]
