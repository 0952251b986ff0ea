"""Create (or recreate) the demo HospitalDB and fill it with deterministic synthetic data.

    python flows/demo_db.py --database-url URL [--visits N] [--seed S] [--force]

The data is generated inside PostgreSQL (sql/demo/generate_data.sql), so a
million visits load in well under a minute. The schema comes from sql/schema/.
A database that holds anything besides this tool's own demo data is left
untouched unless --force is given, and even then only the HospitalDB schemas
are replaced.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
from psycopg2 import sql

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hospitaldb.database import DatabaseTarget, target_from_url
from hospitaldb.errors import StepError
from hospitaldb.sql_runner import execute_statements
from hospitaldb.sql_script import load_statements
from hospitaldb.steps import SQL_DIR

HOSPITALDB_SCHEMAS = ("staging", "analytics", "reporting", "dashboards", "etl_audit")
DEMO_MARKER = "staging.demo_dataset"
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")

log = logging.getLogger("hospitaldb.demo")


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
        (list(SYSTEM_SCHEMAS), list(HOSPITALDB_SCHEMAS)),
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
            (list(HOSPITALDB_SCHEMAS),),
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
                    f"replace the schemas {', '.join(HOSPITALDB_SCHEMAS)} (nothing else is touched)."
                )
            # A fresh load is one big write: no need to wait for each WAL flush.
            cursor.execute("SET LOCAL synchronous_commit = off")
            cursor.execute("SET LOCAL max_parallel_workers_per_gather = 0")  # keeps random() deterministic
            cursor.execute("SELECT set_config('hospitaldb_demo.visits', %s, true)", (str(visits),))
            cursor.execute("SELECT set_config('hospitaldb_demo.seed', %s, true)", (str(seed),))
            for schema in HOSPITALDB_SCHEMAS:
                cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        for path in [*sorted((SQL_DIR / "schema").glob("*.sql")), SQL_DIR / "demo" / "generate_data.sql"]:
            execute_statements(
                connection, load_statements(path, f"sql/{path.relative_to(SQL_DIR)}"), log, path.stem
            )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python flows/demo_db.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    parser.add_argument("--visits", type=int, default=20_000, help="number of visits (default 20000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace the HospitalDB schemas even if the database holds other data",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        seconds = build_demo_database(args.database_url, args.visits, args.seed, args.force)
    except (NotADemoDatabase, ValueError) as error:
        print(f"demo_db: {error}", file=sys.stderr)
        return 2
    except StepError as error:
        print(f"demo_db: {error}", file=sys.stderr)
        return 1
    except psycopg2.Error as error:
        print(f"demo_db: database error: {str(error).strip()}", file=sys.stderr)
        return 1
    target = target_from_url(args.database_url, "--database-url")
    print(
        f"Loaded {args.visits:,} demo visits (seed {args.seed}) into {target.describe()} in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
