"""`hospitaldb changes`: install change capture (an administrator, once), or say what it holds.

    hospitaldb changes install --database-url ADMIN_URL [--owner hospitaldb_owner]
    hospitaldb changes status  [--database-url URL]

install reads `incremental/capture.sql` beside the step files (HOSPITALDB_SQL_DIR), and prints
every statement it runs; run it again after changing that file. See hospitaldb.engine.changes.capture.
status says what waits in each source, and which form each step with an incremental form would
run next with mode auto, and why (hospitaldb.engine.changes.modes).
"""

from __future__ import annotations

import argparse
import logging
import sys

import psycopg2
import psycopg2.errors

from hospitaldb import settings
from hospitaldb.engine.changes.capture import install, status
from hospitaldb.engine.changes.modes import ChosenMode, ModeRequest, choose_mode
from hospitaldb.engine.db.allowlist import report
from hospitaldb.engine.db.database import DatabaseNotConfigured, target_from_url
from hospitaldb.engine.run.plans import plan_steps
from hospitaldb.engine.sql.script import SqlFiles, SqlScriptError
from hospitaldb.engine.steps import STEPS
from hospitaldb.tools.roles import RoleNames

CHANGES_COMMAND = (
    "Install change capture on the tables the steps read (as an administrator), or show its state."
)


def main(argv: list[str] | None = None, prog: str = "hospitaldb changes") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=CHANGES_COMMAND)
    parser.add_argument("action", choices=("install", "status"))
    parser.add_argument(
        "--database-url",
        help=f"install: an administrator's (default {settings.ADMIN_DATABASE_URL}); "
        f"status: any role that may read etl_changes (default {settings.DATABASE_URL})",
    )
    parser.add_argument(
        "--owner",
        default=RoleNames().owner,
        help="the NOLOGIN role etl_changes is handed to (hospitaldb roles'); '' keeps the administrator's",
    )
    args = parser.parse_args(argv)
    setting = settings.ADMIN_DATABASE_URL if args.action == "install" else settings.DATABASE_URL
    url = args.database_url or setting.read()
    if not url:
        print(f"error    give --database-url, or set {setting}", file=sys.stderr)
        return 2
    try:
        connection = target_from_url(url, "--database-url" if args.database_url else setting.name).connect(
            purpose="changes", autocommit=True
        )
    except DatabaseNotConfigured as error:
        print(f"error    {error}", file=sys.stderr)
        return 2
    try:
        if args.action == "install":
            return _install(connection, args.owner)
        return _status(connection)
    finally:
        connection.close()


def _install(connection, owner: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,))
        known = cursor.fetchone() is not None
    try:
        ran = install(connection, owner if owner and known else None)
    except SqlScriptError as error:
        print(f"error    {error}. Nothing was installed.", file=sys.stderr)
        return 1
    except psycopg2.Error as error:
        hint = (
            ": install as an administrator (a superuser, or the owner of the source tables who may create schemas)"
            if isinstance(error, psycopg2.errors.InsufficientPrivilege)
            else ""
        )
        print(f"error    {report(error).text}. Nothing was installed{hint}", file=sys.stderr)
        return 1
    for statement in ran:
        print(f"{statement};")
    if owner and not known:
        print(f"-- note: role {owner} does not exist (run hospitaldb roles first to hand etl_changes to it)")
    return _status(connection)


def _status(connection) -> int:
    try:
        found = status(connection)
    except psycopg2.Error as error:
        print(
            f"error    {report(error).text}: read the status as the administrator or etl_changes' owner",
            file=sys.stderr,
        )
        return 1
    if found is None:
        print("change capture is not installed here: run `hospitaldb changes install` as an administrator")
        return 1
    for source in found:
        truncated = "; truncated since: the next run of its steps is full" if source.truncated else ""
        print(
            f"{source.source}: keys {', '.join(source.keys)}; {source.waiting} changed keys wait{truncated}"
        )
    try:
        for step, chosen, waiting in next_modes(connection):
            print(
                f"{step}, next run with mode auto: {chosen.mode} ({chosen.reason}); {waiting} changed keys wait"
            )
    except (psycopg2.Error, SqlScriptError) as error:
        print(f"-- which form each step runs next is not known: {report(error).text}")
    return 0


def next_modes(connection) -> list[tuple[str, ChosenMode, int]]:
    """What mode auto would run each step with an incremental form, were it to run now, and its keys waiting."""
    plans, _ = plan_steps(list(STEPS), False, 0.5, logging.getLogger(__name__), SqlFiles())
    chosen = []
    with connection.cursor() as cursor:
        for step, plan in plans.items():
            if plan.incremental:
                mode, pending = choose_mode(cursor, step, plan.incremental, ModeRequest())
                chosen.append((step, mode, sum(source.changed_keys for source in pending)))
    return chosen
