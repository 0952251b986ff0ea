"""Soak: nightly refreshes with about 1% of billing changed each night, with and without upkeep.

    python benchmarks/soak_bench.py --visits 200000 --nights 30

Two copies of the demo database, the same changes each night: about 1% of the billing
lines get a new amount, then the flow runs, with upkeep (the default) on one copy and
`upkeep=False` on the other. Autovacuum stays on in both, as in production. Per night it
records the total size of the refreshed objects (tables, views, indexes, TOAST), their
dead rows as PostgreSQL counts them, and each step's seconds. Prints a table and writes
JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from refresh_bench import (
    build_database,
    drop_databases,
    machine,
    postgres_admin,
    prefect_api,
    query_value,
    write_report,
)

from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.engine.sql.analysis import refreshed_objects
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.paths import PROJECT_ROOT

OBJECTS = list(refreshed_objects(SqlFiles()))
SIZE = "SELECT sum(pg_total_relation_size(to_regclass(name)))::bigint FROM unnest(%s::text[]) AS name"
DEAD = (
    "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables "
    "WHERE schemaname || '.' || relname = ANY(%s::text[])"
)
# About 1% of the billing lines, a different 1% each night.
REPRICE = "UPDATE staging.billing SET amount = amount + 0.01 WHERE billing_id %% 100 = %s"


def night(url: str, number: int, upkeep: bool) -> dict[str, Any]:
    import psycopg2

    from hospitaldb.refresh import hospitaldb_refresh

    connection = psycopg2.connect(url)
    with connection, connection.cursor() as cursor:
        cursor.execute(REPRICE, (number % 100,))
    connection.close()
    os.environ[DATABASE_URL_ENV] = url
    steps = hospitaldb_refresh(retries=0, upkeep=upkeep)
    return {
        "night": number,
        "size_bytes": query_value(url, SIZE, (OBJECTS,)),
        "dead_rows": query_value(url, DEAD, (OBJECTS,)),
        "step_seconds": {step["step"]: step["seconds"] for step in steps},
    }


def within(values: list[float], reference: float) -> float:
    """The largest relative distance of values from reference."""
    return round(max(abs(value - reference) / reference for value in values), 3)


def summary(nights: list[dict[str, Any]]) -> dict[str, Any]:
    sizes = [row["size_bytes"] for row in nights]
    totals = [sum(row["step_seconds"].values()) for row in nights]
    return {
        "size_night_2_bytes": sizes[1],
        "size_last_bytes": sizes[-1],
        "size_growth_from_night_2": round(sizes[-1] / sizes[1] - 1, 3),
        "size_max_distance_from_night_2": within(sizes[1:], sizes[1]),
        "steps_seconds_night_2": round(totals[1], 3),
        "steps_seconds_median_after_night_2": round(statistics.median(totals[2:]), 3),
        "steps_seconds_max_distance_from_median": within(totals[2:], statistics.median(totals[2:])),
        "dead_rows_last": nights[-1]["dead_rows"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/soak_bench.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--visits", type=int, default=200_000)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument("--prefect-api-url", help="a running Prefect server (default: start one)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"machine": machine(), "visits": args.visits, "nights": args.nights}
    with tempfile.TemporaryDirectory(prefix="hospitaldb-soak-") as scratch:
        with (
            postgres_admin(args.admin_url, Path(scratch)) as admin_url,
            prefect_api(args.prefect_api_url, Path(scratch) / "prefect-home") as api_url,
        ):
            os.environ["PREFECT_API_URL"] = api_url
            names = {True: "hospitaldb_soak_upkeep", False: "hospitaldb_soak_no_upkeep"}
            urls = {upkeep: build_database(admin_url, name, args.visits) for upkeep, name in names.items()}
            runs: dict[bool, list[dict[str, Any]]] = {True: [], False: []}
            for number in range(1, args.nights + 1):
                for upkeep, url in urls.items():
                    runs[upkeep].append(night(url, number, upkeep))
                print(
                    f"  night {number:2}: size with upkeep {runs[True][-1]['size_bytes'] / 2**20:7.1f} MiB, "
                    f"without {runs[False][-1]['size_bytes'] / 2**20:7.1f} MiB",
                    flush=True,
                )
            drop_databases(admin_url, list(names.values()))
    report["with_upkeep"] = {"summary": summary(runs[True]), "nights": runs[True]}
    report["without_upkeep"] = {"summary": summary(runs[False]), "nights": runs[False]}
    print(json.dumps({key: report[key]["summary"] for key in ("with_upkeep", "without_upkeep")}, indent=2))
    return write_report(report, args.json)


if __name__ == "__main__":
    main()
