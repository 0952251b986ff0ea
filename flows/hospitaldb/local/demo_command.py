"""`hospitaldb demo-db`: create (or recreate) the demo HospitalDB and fill it with deterministic synthetic data.

The work is done by hospitaldb.local.demo; this is its command line.
"""

from __future__ import annotations

import argparse
import logging
import sys

import psycopg2

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.errors import StepError
from hospitaldb.local.demo import NotADemoDatabase, build_demo_database


def main(argv: list[str] | None = None, prog: str = "hospitaldb demo-db") -> int:
    """Build the demo HospitalDB in the database --database-url names; print how long it took."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Create (or recreate) the demo HospitalDB and fill it with deterministic synthetic data.",
    )
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
        print(f"{prog}: {error}", file=sys.stderr)
        return 2
    except StepError as error:
        print(f"{prog}: {error}", file=sys.stderr)
        return 1
    except psycopg2.Error as error:
        print(f"{prog}: database error: {str(error).strip()}", file=sys.stderr)
        return 1
    target = target_from_url(args.database_url, "--database-url")
    print(
        f"Loaded {args.visits:,} demo visits (seed {args.seed}) into {target.describe()} in {seconds:.1f} s"
    )
    return 0
