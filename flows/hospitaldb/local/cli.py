"""`python flows/refresh.py`: run the refresh once, here, and print a summary.

Only this local entry point falls back to the embedded demo database
(hospitaldb.local.demo); a deployment run with no database configured fails and says
how to configure one.
"""

from __future__ import annotations

import argparse
import sys

from hospitaldb import settings
from hospitaldb.engine.database import DatabaseNotConfigured
from hospitaldb.engine.steps import STEPS
from hospitaldb.record.outcome import outcome_in
from hospitaldb.refresh import DEFAULT_RETRIES, hospitaldb_refresh
from hospitaldb.report.summary import summary_text
from hospitaldb.statuses import RunStatus


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python flows/refresh.py",
        description=(
            "Run the HospitalDB refresh once, here. The database comes from --database-url, "
            f"else {settings.DATABASE_URL}, else the 'hospitaldb-postgres' block; with none of them, "
            "an embedded demo PostgreSQL is started under .hospitaldb/ and filled with demo data "
            "on first use."
        ),
    )
    parser.add_argument("--database-url", help="postgresql://USER:PASSWORD@HOST:PORT/DBNAME")
    parser.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        metavar="STEP",
        help=f"steps to run, in pipeline order (default all): {', '.join(STEPS)}",
    )
    parser.add_argument("--database-block", help="SqlAlchemyConnector block name")
    parser.add_argument(
        "--demo-visits",
        type=int,
        default=20_000,
        help="visits in the embedded demo database when it is first built (default 20000)",
    )
    parser.add_argument("--statement-timeout", type=float, default=3600, metavar="SECONDS")
    parser.add_argument("--lock-timeout", type=float, default=30, metavar="SECONDS")
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES)
    parser.add_argument(
        "--skip-source-checks",
        action="store_true",
        help="do not enforce the source checks (a deliberate reload); counts are still recorded",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="run every step and its checks, print what each would change, and roll back",
    )
    parser.add_argument(
        "--allow-shrink",
        action="store_true",
        help="let a refreshed object lose more than half of its rows (the shrink guard)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from hospitaldb.local.demo import choose_local_database

    args = parse_args(argv)
    try:
        where = choose_local_database(args.database_url, args.database_block, args.demo_visits)
    except DatabaseNotConfigured as error:
        print(f"Refresh not started: {error}", file=sys.stderr)
        return 2
    state = hospitaldb_refresh(
        steps=args.steps,
        database_block=args.database_block,
        statement_timeout_seconds=args.statement_timeout,
        lock_timeout_seconds=args.lock_timeout,
        retries=args.retries,
        skip_source_checks=args.skip_source_checks,
        allow_shrink=args.allow_shrink,
        dry_run=args.dry_run,
        return_state=True,
    )
    outcome = outcome_in(state)
    if outcome is None:  # the run ended before its body started (parameters refused by Prefect)
        print(f"\nRefresh not started: {state.name}; see the run's logs", file=sys.stderr)
        return 2
    print(summary_text(outcome, where))
    return 0 if outcome.status == RunStatus.COMPLETED else 1
