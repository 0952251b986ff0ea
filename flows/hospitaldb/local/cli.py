"""`hospitaldb refresh` and `python flows/refresh.py`: run the refresh once, here, and print a summary.

Every flow parameter is an option, derived from the flow's own parameter schema (its
signature and docstring), so the two cannot drift: `--dry-run`, `--parallel-views 2`,
`--no-upkeep`... An option not given is not passed, and the flow's default applies.
Only this local entry point falls back to the embedded demo database
(hospitaldb.local.demo); a deployment run with no database configured fails and says
how to configure one.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from hospitaldb import settings
from hospitaldb.engine.db.database import DatabaseNotConfigured
from hospitaldb.record.handover import outcome_in
from hospitaldb.report.summary import summary_text
from hospitaldb.statuses import RunStatus

# The names these options had before they were derived from the flow: still accepted.
ALIASES = {
    "statement_timeout_seconds": ["--statement-timeout"],
    "lock_timeout_seconds": ["--lock-timeout"],
    "run_timeout_seconds": ["--run-timeout"],
}
# A local run's temporary Prefect server: it has no network to send usage data to, and Prefect's
# 20 s to start it is too short on a busy two-core machine (the demo failed so, mid-CI).
LOCAL_PREFECT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}
TYPES = {"integer": int, "number": float, "string": str}
METAVARS = {"integer": "N", "number": "NUMBER", "string": "NAME"}


def refresh_parser(prog: str = "python flows/refresh.py") -> argparse.ArgumentParser:
    from hospitaldb.refresh import hospitaldb_refresh

    parser = argparse.ArgumentParser(
        prog=prog,
        description=(
            "Run the HospitalDB refresh once, here. The database comes from --database-url, "
            f"else {settings.DATABASE_URL}, else the 'hospitaldb-postgres' block; with none of them, "
            "an embedded demo PostgreSQL is started under .hospitaldb/ and filled with demo data "
            "on first use. Every other option is a flow parameter (docs: configuration)."
        ),
    )
    local = parser.add_argument_group("this run only")
    local.add_argument(
        "--database-url",
        help="postgresql://USER@HOST:PORT/DBNAME (a password here is visible to other local users "
        "in the process list: prefer ~/.pgpass or the environment)",
    )
    local.add_argument(
        "--demo",
        action="store_true",
        help="refresh the embedded demo database, whatever the environment or the block name "
        "(python3 dev.py demo passes it)",
    )
    local.add_argument(
        "--demo-visits",
        type=int,
        default=20_000,
        help="visits in the embedded demo database when it is first built (default 20000)",
    )
    add_flow_parameters(
        parser.add_argument_group("flow parameters"), hospitaldb_refresh.parameters.model_dump()
    )
    return parser


def add_flow_parameters(group: Any, schema: Mapping[str, Any]) -> None:
    """One option per parameter of a flow's parameter schema, in the flow's order."""
    for name, spec in schema["properties"].items():
        kind, items = _kind(spec)
        description = " ".join(spec.get("description", "").split()).replace("%", "%%")
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS}
        if kind == "boolean":
            options["action"] = argparse.BooleanOptionalAction
        elif kind == "array":
            options["nargs"] = "+"
            options["choices"] = items.get("enum")
            options["metavar"] = name.removesuffix("s").upper()
        else:
            options["type"] = TYPES[kind]
            options["metavar"] = "SECONDS" if name.endswith("_seconds") else METAVARS[kind]
        default = spec.get("default")
        shown = "none" if default is None else str(default).lower() if kind == "boolean" else default
        choices = f" One or more of: {', '.join(items['enum'])}." if items.get("enum") else ""
        options["help"] = f"{description}{choices} (default: {shown})"
        group.add_argument("--" + name.replace("_", "-"), *ALIASES.get(name, []), **options)


def _kind(spec: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    """The JSON type of a parameter (an optional one: its non-null type) and, for a list, its items."""
    typed = next(
        (option for option in spec.get("anyOf", [spec]) if option.get("type") not in (None, "null")), spec
    )
    return typed.get("type", "string"), typed.get("items", {})


def password_warning(database_url: str | None) -> str | None:
    """A warning when a password came on the command line, where every local user can read it (ps)."""
    from sqlalchemy.engine import make_url

    try:
        url = make_url(database_url) if database_url else None
    except Exception:  # not a URL at all: choose_local_database says so, without repeating it
        return None
    if url is None or (url.password is None and "password" not in url.query):
        return None
    return (
        "Warning: --database-url holds a password, which every user of this machine can read in the "
        "process list while the refresh runs. Put it in ~/.pgpass (or a libpq service file, PGSERVICE) "
        "and leave it out of the URL (docs: get started)."
    )


def main(argv: list[str] | None = None, prog: str = "python flows/refresh.py") -> int:
    from hospitaldb.local.demo import choose_local_database
    from hospitaldb.refresh import hospitaldb_refresh

    args = vars(refresh_parser(prog).parse_args(argv))
    for name, value in LOCAL_PREFECT.items():
        os.environ.setdefault(name, value)
    database_url, demo, demo_visits = args.pop("database_url"), args.pop("demo"), args.pop("demo_visits")
    if demo and (database_url or args.get("database_block")):
        print("--demo refreshes the embedded demo database: give no database with it", file=sys.stderr)
        return 2
    warning = password_warning(database_url)
    if warning:
        print(warning, file=sys.stderr)
    try:
        where = choose_local_database(database_url, args.get("database_block"), demo_visits, demo=demo)
    except DatabaseNotConfigured as error:
        print(f"Refresh not started: {error}", file=sys.stderr)
        return 2
    state = hospitaldb_refresh(**args, return_state=True)
    outcome = outcome_in(state)
    if outcome is None:  # the run ended before its body started (parameters refused by Prefect)
        print(f"\nRefresh not started: {state.name}; see the run's logs", file=sys.stderr)
        return 2
    print(summary_text(outcome, where))
    return 0 if outcome.status == RunStatus.COMPLETED else 1
