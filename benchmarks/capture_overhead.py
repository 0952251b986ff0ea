"""What change capture costs the loader: a night's load timed without and with `hospitaldb changes install`.

    python benchmarks/capture_overhead.py --visits 1000000 --admin-url postgresql://postgres@127.0.0.1:5432/postgres

Builds the demo database at the given size, then for each of --runs rounds, in one
transaction each and rolled back after timing (so every round loads the same night): the
night's load as a loader writes it, --share of visits: new visits with their bills and
payments (INSERT), a tenth of that many payments moved to another bill and bills marked
paid (UPDATE), and as many payments removed (DELETE). First without capture, then with it
installed (statement-level triggers with transition tables; sql/changes/etl_changes.sql).
Medians of --runs; the goal is with/without <= 1.15. Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from refresh_bench import build_database, drop_databases, libpq_url, machine, postgres_admin, write_report

from hospitaldb.engine.changes.capture import install
from hospitaldb.paths import PROJECT_ROOT as ROOT

# A night's load, sized by %(new)s new visits and %(moved)s moved or removed payments.
NIGHT = [
    (
        "insert visits",
        "INSERT INTO staging.visits SELECT m.top + row_number() OVER (), v.patient_id, v.doctor_id, v.branch_id, "
        "DATE '2026-12-07', v.visit_type FROM (SELECT * FROM staging.visits ORDER BY visit_id LIMIT %(new)s) AS v, "
        "(SELECT max(visit_id) AS top FROM staging.visits) AS m",
    ),
    (
        "insert bills",
        "INSERT INTO staging.billing SELECT m.top + g, v.top - %(new)s + g, 'CONSULT', 120, 'pending', "
        "DATE '2026-12-07' FROM generate_series(1, %(new)s) AS g, (SELECT max(billing_id) AS top FROM "
        "staging.billing) AS m, (SELECT max(visit_id) AS top FROM staging.visits) AS v",
    ),
    (
        "insert payments",
        "INSERT INTO staging.payments SELECT m.top + g, b.top - %(new)s + g, 60, DATE '2026-12-07', 'card' "
        "FROM generate_series(1, %(new)s) AS g, (SELECT max(payment_id) AS top FROM staging.payments) AS m, "
        "(SELECT max(billing_id) AS top FROM staging.billing) AS b",
    ),
    (
        "move payments",
        "UPDATE staging.payments AS p SET billing_id = (SELECT min(b.billing_id) FROM staging.billing AS b) "
        "WHERE p.payment_id IN (SELECT payment_id FROM staging.payments ORDER BY payment_id LIMIT %(moved)s)",
    ),
    (
        "mark bills paid",
        "UPDATE staging.billing SET status = 'paid' WHERE billing_id IN "
        "(SELECT billing_id FROM staging.billing ORDER BY billing_id DESC LIMIT %(moved)s)",
    ),
    (
        "remove payments",
        "DELETE FROM staging.payments WHERE payment_id IN "
        "(SELECT payment_id FROM staging.payments ORDER BY payment_id DESC LIMIT %(moved)s)",
    ),
]


def load_once(url: str, sizes: dict[str, int]) -> dict[str, float]:
    """Each statement of the night's load, timed, in one transaction rolled back after."""
    seconds = {}
    with psycopg2.connect(libpq_url(url)) as connection, connection.cursor() as cursor:
        for name, statement in NIGHT:
            started = time.perf_counter()
            cursor.execute(statement, sizes)
            seconds[name] = time.perf_counter() - started
        connection.rollback()
    return seconds


def measure(url: str, sizes: dict[str, int], runs: int) -> dict[str, Any]:
    rounds = [load_once(url, sizes) for _ in range(runs)]
    totals = [sum(one.values()) for one in rounds]
    return {
        "median_seconds": statistics.median(totals),
        "statements": {name: statistics.median(one[name] for one in rounds) for name, _ in NIGHT},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--share", type=float, default=0.01, help="new visits, as a share of --visits")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "capture_overhead.json"
    )
    args = parser.parse_args(argv)
    new = max(1, int(args.visits * args.share))
    sizes = {"new": new, "moved": max(1, new // 10)}
    with tempfile.TemporaryDirectory(prefix="hospitaldb-capture-") as folder:
        with postgres_admin(args.admin_url, Path(folder)) as admin_url:
            name = f"hospitaldb_capture_{args.visits}"
            url = build_database(admin_url, name, args.visits)
            try:
                load_once(url, sizes)  # warm the caches: both measured sides start warm
                without = measure(url, sizes, args.runs)
                with psycopg2.connect(libpq_url(url)) as connection:
                    connection.autocommit = True
                    install(connection)
                captured = measure(url, sizes, args.runs)
            finally:
                drop_databases(admin_url, [name])
    ratio = captured["median_seconds"] / without["median_seconds"]
    print(f"{'statement':<18}{'without s':>12}{'with s':>12}")
    for statement, _ in NIGHT:
        print(
            f"{statement:<18}{without['statements'][statement]:>12.3f}{captured['statements'][statement]:>12.3f}"
        )
    print(
        f"{'whole load':<18}{without['median_seconds']:>12.3f}{captured['median_seconds']:>12.3f}  ratio {ratio:.2f}"
    )
    report = {
        "visits": args.visits,
        "new_visits": sizes["new"],
        "moved_or_removed": sizes["moved"],
        "runs": args.runs,
        "without_capture": without,
        "with_capture": captured,
        "ratio": ratio,
        "goal": 1.15,
        "machine": machine(),
    }
    return write_report(report, args.json)


if __name__ == "__main__":
    main()
