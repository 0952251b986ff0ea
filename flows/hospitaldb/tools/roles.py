"""Least privilege: the database roles the refresh runs as, with exactly the grants its SQL needs.

    python deployments/create_roles.py        (docs/security.md, "Least privilege")

Three roles (names settable):
- the owner of etl_audit (NOLOGIN): its tables and views, data_status's definition among them;
- the owner also owns the materialized views the steps refresh (PostgreSQL before 17 lets only
  the owner REFRESH), reads what they read, and owns etl_audit.refresh_materialized_view, a
  SECURITY DEFINER function that refreshes its views and nothing else;
- the refresher (LOGIN): SELECT on what the steps, their checks and the source checks read,
  and on the views; EXECUTE on that function (so it refreshes the views, and cannot grant,
  alter or drop them); SELECT, INSERT, UPDATE, DELETE on the tables the steps write;
  TEMPORARY (the steps' temporary tables); and in etl_audit SELECT, and EXECUTE on its writing
  functions (SECURITY DEFINER, the owner's, keeping each record's life): never INSERT or UPDATE;
  where change capture is installed, EXECUTE on the functions that take a step's changed keys
  (never the logs themselves);
- the status reader (LOGIN): SELECT on etl_audit.data_status, nothing else.

What is read and written comes from the SQL files (hospitaldb.engine.sql.analysis) and the catalog
(what a materialized view reads), so another warehouse gets its own grants with no Python
edited. Nothing else is granted: a staging table no SQL names stays unreadable. Idempotent, and
converging: what the refresher or the reader holds beyond that (from an earlier version, or granted
by hand), and anything PUBLIC holds on the owner's objects and in etl_audit, is taken back first, in
the same transaction as the grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg2 import sql

from hospitaldb.engine.changes.capture import refresher_grants
from hospitaldb.engine.changes.modes import incremental_file
from hospitaldb.engine.checks.source import sources_file
from hospitaldb.engine.checks.step import load_checks, load_incremental_checks
from hospitaldb.engine.sql.analysis import analyse_steps, relations_named
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS
from hospitaldb.record.audit_schema import upgrade_schema

AUDIT_SCHEMA = "etl_audit"
STATUS_VIEW = "data_status"
SYSTEM_SCHEMAS = ["pg_catalog", "information_schema"]

# Each name the SQL uses, resolved as PostgreSQL would, with its kind.
RESOLVE = """
SELECT DISTINCT c.oid, n.nspname, c.relname, c.relkind
FROM unnest(%s::text[]) AS name
JOIN pg_class AS c ON c.oid = to_regclass(name)
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname <> ALL (%s)
"""
# What materialized views read, through materialized views they read: REFRESH runs each one's
# query as its owner. A plain view reads with its own owner's rights: not followed.
VIEW_INPUTS = """
WITH RECURSIVE input (oid, relkind) AS (
    SELECT c.oid, c.relkind FROM pg_class AS c WHERE c.oid = ANY (%s::oid[])
    UNION
    SELECT d.refobjid, c.relkind
    FROM input
    JOIN pg_rewrite AS r ON r.ev_class = input.oid
    JOIN pg_depend AS d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                       AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> input.oid
    JOIN pg_class AS c ON c.oid = d.refobjid
    WHERE input.relkind = 'm'
)
SELECT DISTINCT c.oid, n.nspname, c.relname, c.relkind
FROM input JOIN pg_class AS c USING (oid) JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname <> ALL (%s)
"""
# Where the refresher or the reader holds a privilege, or PUBLIC one on what the owner owns: what
# `hospitaldb roles` takes back before it grants again, so that the grants converge on the SQL's.
HELD_ON_RELATIONS = """
SELECT DISTINCT n.nspname, c.relname
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace, aclexplode(c.relacl) AS a
WHERE n.nspname <> ALL (%(system)s)
  AND a.grantee <> c.relowner  -- an owner's own rights: a view 1.2 left the refresher's is handed over with them
  AND (a.grantee = ANY (%(roles)s::regrole[])
       OR (a.grantee = 0 AND c.relowner = ANY (%(roles)s::regrole[] || %(owner)s::regrole)))
ORDER BY 1, 2
"""
HELD_ON_SCHEMAS = """
SELECT DISTINCT n.nspname
FROM pg_namespace AS n, aclexplode(n.nspacl) AS a
WHERE n.nspname <> ALL (%(system)s) AND a.grantee = ANY (%(roles)s::regrole[]) AND a.grantee <> n.nspowner
ORDER BY 1
"""
AUDIT_OBJECTS = """
SELECT c.relname, c.relkind FROM pg_class AS c
WHERE c.relnamespace = to_regnamespace(%s) AND c.relkind IN ('r', 'v', 'p') ORDER BY 1
"""
# etl_audit's functions but its triggers': how the refresher writes the audit (and refreshes the views).
# Each as regprocedure's text: PostgreSQL's own quoting of its name and argument types.
AUDIT_FUNCTIONS = """
SELECT p.oid::regprocedure::text FROM pg_proc AS p
WHERE p.pronamespace = to_regnamespace(%s) AND p.prorettype <> 'trigger'::regtype ORDER BY 1
"""
# The one table of etl_audit the refresher may lock (SHARE ROW EXCLUSIVE needs UPDATE): no rows, no columns.
LOCK_TABLE = "refresh_lock"


@dataclass(frozen=True)
class RoleNames:
    owner: str = "hospitaldb_owner"
    refresher: str = "hospitaldb_refresher"
    reader: str = "hospitaldb_status_reader"


@dataclass(frozen=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def _relations(cursor: Any, query: str, argument: list[Any]) -> set[Relation]:
    cursor.execute(query, (argument, SYSTEM_SCHEMAS))
    return {Relation(*row) for row in cursor.fetchall()}


def refresh_grants(cursor: Any, roles: RoleNames, files: SqlFiles) -> list[sql.Composed]:
    """What the refresher needs to run every step, check and source check: and nothing more."""
    written, named = set(), set()
    for step, parsed in analyse_steps(files, STEPS).items():
        written.update(parsed.objects)
        named.update(relations_named(parsed.statements))
        checks = load_checks(step, files)
        stand_ins = load_incremental_checks(step, {c.name: c.severity for c in checks}, files).values()
        named.update(relations_named([check.statement for check in [*checks, *stand_ins]]))
        if incremental_file(step).exists():
            named.update(relations_named(list(files.load(incremental_file(step)).statements)))
    if sources_file().exists():
        named.update(relations_named(files.load(sources_file()).statements))
    refreshed = _relations(cursor, RESOLVE, sorted(written))
    views = {relation for relation in refreshed if relation.kind == "m"}
    view_inputs = _relations(cursor, VIEW_INPUTS, [v.oid for v in views]) - views
    read = (_relations(cursor, RESOLVE, sorted(named)) | view_inputs | views) - (refreshed - views)
    refresher, owner = sql.Identifier(roles.refresher), sql.Identifier(roles.owner)
    schemas = sorted({relation.schema for relation in refreshed | read})
    return [
        sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, {}").format(
            _database(cursor), refresher, owner
        ),
        *(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(sql.Identifier(s), refresher, owner)
            for s in schemas
        ),
        # The views belong to the NOLOGIN owner, which refreshes them for the refresher (etl_audit.refresh_materialized_view).
        *(
            sql.SQL("ALTER MATERIALIZED VIEW {} OWNER TO {}").format(view.identifier, owner)
            for view in sorted(views, key=_key)
        ),
        *(
            sql.SQL("GRANT SELECT ON {} TO {}").format(relation.identifier, owner)
            for relation in sorted(view_inputs, key=_key)
        ),
        *(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(table.identifier, refresher)
            for table in sorted(refreshed - views, key=_key)
        ),
        *(
            sql.SQL("GRANT SELECT ON {} TO {}").format(relation.identifier, refresher)
            for relation in sorted(read, key=_key)
        ),
    ]


def audit_grants(cursor: Any, roles: RoleNames) -> list[sql.Composed]:
    """etl_audit read, and written through its functions, by the refresher; data_status for the reader.

    No INSERT or UPDATE on any audit table: the functions (SECURITY DEFINER, the owner's) are
    the only way in, and they keep each record's life (sql/schema/05_etl_audit.sql).
    """
    refresher, reader = sql.Identifier(roles.refresher), sql.Identifier(roles.reader)
    schema = sql.Identifier(AUDIT_SCHEMA)
    cursor.execute(AUDIT_OBJECTS, (AUDIT_SCHEMA,))
    objects = cursor.fetchall()
    cursor.execute(AUDIT_FUNCTIONS, (AUDIT_SCHEMA,))
    functions = [row[0] for row in cursor.fetchall()]
    return [
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(_database(cursor), reader),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}, {}").format(schema, refresher, reader),
        *(
            sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(AUDIT_SCHEMA, name), refresher)
            for name, _ in objects
        ),
        sql.SQL("GRANT UPDATE ON {} TO {}").format(sql.Identifier(AUDIT_SCHEMA, LOCK_TABLE), refresher),
        *(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(f), refresher) for f in functions),
        sql.SQL("GRANT SELECT ON {} TO {}").format(sql.Identifier(AUDIT_SCHEMA, STATUS_VIEW), reader),
    ]


def revocations(cursor: Any, roles: RoleNames) -> list[sql.Composed]:
    """Every privilege the refresher and the reader hold, and PUBLIC on the owner's objects: taken back.

    Run in the same transaction as the grants that follow, so no refresh sees a moment
    without what it needs. What an earlier version, or a hand, granted beyond the SQL's
    needs does not survive (a `GRANT ... TO PUBLIC` on a view the refresher once owned).
    """
    names = {"system": SYSTEM_SCHEMAS, "roles": [roles.refresher, roles.reader], "owner": roles.owner}
    refresher, reader = sql.Identifier(roles.refresher), sql.Identifier(roles.reader)
    cursor.execute(HELD_ON_RELATIONS, names)
    relations = cursor.fetchall()
    cursor.execute(HELD_ON_SCHEMAS, names)
    schemas = [row[0] for row in cursor.fetchall()]
    audit = sql.Identifier(AUDIT_SCHEMA)
    return [
        *(
            sql.SQL("REVOKE ALL ON {} FROM PUBLIC, {}, {}").format(
                sql.Identifier(schema, name), refresher, reader
            )
            for schema, name in relations
        ),
        *(
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}, {}").format(sql.Identifier(schema), refresher, reader)
            for schema in schemas
        ),
        sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(audit),
        sql.SQL("REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {} FROM PUBLIC, {}, {}").format(
            audit, refresher, reader
        ),
    ]


def create_roles(connection: Any, roles: RoleNames) -> list[str]:
    """Create the roles, create or upgrade etl_audit and hand it to its owner, grant; return what ran.

    The connection is an administrator's (a superuser, or a role that owns the refreshed
    objects and may create roles), in autocommit mode. Run it again after an upgrade of
    this project changes sql/schema/05_etl_audit.sql: the refresher may not change it.
    """
    ran: list[str] = []
    with connection.cursor() as cursor:

        def run(statement: sql.Composable) -> None:
            cursor.execute(statement)
            ran.append(statement.as_string(connection))

        for name, login in ((roles.owner, False), (roles.refresher, True), (roles.reader, True)):
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
            if not cursor.fetchone():
                run(
                    sql.SQL("CREATE ROLE {} " + ("LOGIN" if login else "NOLOGIN")).format(
                        sql.Identifier(name)
                    )
                )
        files = SqlFiles()  # each SQL file read and parsed once
        upgrade_schema(
            connection, files
        )  # as the administrator: creating a schema needs the database's CREATE
        _hand_audit_to_owner(cursor, run, roles.owner)
        cursor.execute("BEGIN")  # taken back and granted again at once: no refresh sees the gap
        for statement in [
            *revocations(cursor, roles),
            *refresh_grants(cursor, roles, files),
            *audit_grants(cursor, roles),
            *refresher_grants(cursor, roles.refresher),
        ]:
            run(statement)
        cursor.execute("COMMIT")
    return ran


def _hand_audit_to_owner(cursor: Any, run: Any, owner: str) -> None:
    """etl_audit and everything in it belongs to the owner, whoever created it (an earlier run, or us)."""
    run(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(AUDIT_SCHEMA), sql.Identifier(owner)))
    cursor.execute(AUDIT_OBJECTS, (AUDIT_SCHEMA,))
    for name, kind in cursor.fetchall():
        command = "ALTER VIEW {} OWNER TO {}" if kind == "v" else "ALTER TABLE {} OWNER TO {}"
        run(sql.SQL(command).format(sql.Identifier(AUDIT_SCHEMA, name), sql.Identifier(owner)))
    # SECURITY DEFINER functions run as their owner: the NOLOGIN owner, never the administrator.
    cursor.execute(AUDIT_FUNCTIONS, (AUDIT_SCHEMA,))
    for (function,) in cursor.fetchall():
        run(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(sql.SQL(function), sql.Identifier(owner)))


def _database(cursor: Any) -> sql.Identifier:
    cursor.execute("SELECT current_database()")
    return sql.Identifier(cursor.fetchone()[0])


def _key(relation: Relation) -> tuple[str, str]:
    return relation.schema, relation.name
