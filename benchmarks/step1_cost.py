"""What step 1's materialized views cost to refresh, with and without CONCURRENTLY.

Step 1 refreshed four materialized views until 1.8.0; since 1.9.0 it maintains tables (the
decision and its numbers: docs/decisions.md). This measures the views, as a team's warehouse
that keeps them refreshes them: a database it builds gets them from
tests/fixtures/analytics_views_1_8_0.sql; one given with --url must have them.

    python benchmarks/step1_cost.py --visits 1000000 --admin-url postgresql://postgres@127.0.0.1:5432/postgres

Builds the demo database at the given size (or uses --url, an existing database with
the reference HospitalDB), fills the views once, then for each --work-mem setting and
each of --runs rounds refreshes every view of step 1, in pipeline order and each in a
transaction of its own: first `REFRESH MATERIALIZED VIEW CONCURRENTLY` (what the flow
does: readers never wait), then a plain `REFRESH MATERIALIZED VIEW` (what dbt does: it
locks every reader out of the view until it commits). For each refresh it reports the
seconds and the temporary files PostgreSQL wrote (pg_stat_database.temp_bytes): the
sorts and hashes that spilled out of work_mem.

The plain refreshes block readers: run this on a benchmark database, never on one in
use. Medians of --runs; prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from refresh_bench import (
    build_database,
    drop_databases,
    libpq_url,
    machine,
    postgres_admin,
    query_rows,
    query_value,
    write_report,
)

from hospitaldb.engine.db.allowlist import report as allowlisted
from hospitaldb.paths import PROJECT_ROOT as ROOT

VIEWS_SCHEMA = ROOT / "tests" / "fixtures" / "analytics_views_1_8_0.sql"
VIEWS = [
    "analytics.mv_billing_summary",
    "analytics.mv_visit_summary",
    "analytics.mv_patient_summary",
    "analytics.mv_branch_billing_summary",
]  # in pipeline order
MODES = {
    "concurrently": sql.SQL("REFRESH MATERIALIZED VIEW CONCURRENTLY {}"),
    "plain": sql.SQL("REFRESH MATERIALIZED VIEW {}"),
}
SERVER = """
SELECT current_setting('server_version'), current_setting('shared_buffers'), (SELECT count(*) FROM staging.visits)
"""
TEMP_BYTES = "SELECT temp_bytes FROM pg_stat_database WHERE datname = current_database()"


def with_views(url: str) -> None:
    """Step 1's tables replaced by the views they were until 1.8.0 (a database this benchmark built)."""
    connection = psycopg2.connect(url)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("DROP SCHEMA analytics CASCADE")
            cursor.execute(VIEWS_SCHEMA.read_text())
    finally:
        connection.close()


def temp_bytes(url: str) -> int:
    """The database's temp_bytes so far, including the refresh that just ended.

    A session reports its statistics when it exits, which happens just after it closes:
    the pause lets the last refresh's session get there first.
    """
    time.sleep(1.5)
    return query_value(url, TEMP_BYTES)


def refresh(url: str, view: str, mode: str, work_mem: str) -> tuple[float, int]:
    """One refresh of one view in its own committed transaction: seconds and temp bytes.

    A failed refresh ends the benchmark with the allowlisted part of PostgreSQL's error:
    a duplicate-rows error quotes the row.
    """
    before = temp_bytes(url)
    connection = psycopg2.connect(libpq_url(url))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('work_mem', %s, true)", (work_mem,))
            started = time.monotonic()
            cursor.execute(MODES[mode].format(sql.Identifier(*view.split("."))))
            connection.commit()
            seconds = time.monotonic() - started
    except psycopg2.Error as error:
        shown = allowlisted(error)
        raise SystemExit(f"{mode} refresh of {view} failed: [{shown.sqlstate}] {shown.text}") from None
    finally:
        connection.close()
    return seconds, temp_bytes(url) - before


def server(url: str) -> dict[str, str]:
    ((version, shared_buffers, visits),) = query_rows(url, SERVER)
    return {"postgresql": version, "shared_buffers": shared_buffers, "visits": visits}


def summary(samples: dict[str, list[tuple[float, int]]]) -> dict[str, Any]:
    """Per view its seconds and medians; in all the sum of the medians."""
    views = {
        name: {
            "seconds": [round(s, 3) for s, _ in values],
            "median_seconds": round(statistics.median(s for s, _ in values), 3),
            "median_temp_bytes": statistics.median(b for _, b in values),
        }
        for name, values in samples.items()
    }
    return {
        "views": views,
        "total_median_seconds": round(sum(view["median_seconds"] for view in views.values()), 3),
        "total_median_temp_mib": round(sum(view["median_temp_bytes"] for view in views.values()) / 2**20, 1),
    }


def measure(url: str, work_mems: list[str], runs: int) -> dict[str, Any]:
    views = VIEWS
    for view in views:  # the demo's views start empty: fill them, so every measured refresh is a nightly one
        refresh(url, view, "plain", work_mems[0])
    results: dict[str, Any] = {}
    for work_mem in work_mems:
        samples: dict[str, dict[str, list[tuple[float, int]]]] = {
            mode: {view: [] for view in views} for mode in MODES
        }
        for _ in range(runs):
            for mode in MODES:
                for view in views:
                    seconds, spilled = refresh(url, view, mode, work_mem)
                    samples[mode][view].append((seconds, spilled))
                    print(f"  work_mem {work_mem}, {mode}, {view}: {seconds:.1f} s", flush=True)
        results[work_mem] = {mode: summary(by_view) for mode, by_view in samples.items()}
        concurrently, plain = (results[work_mem][mode]["total_median_seconds"] for mode in MODES)
        results[work_mem]["concurrently_over_plain"] = round(concurrently / plain, 2)
    return results


def report_on(url: str, work_mems: list[str], runs: int) -> dict[str, Any]:
    about = server(url)
    return {"visits": about["visits"], "server": about, "work_mem": measure(url, work_mems, runs)}


def print_table(report: dict[str, Any]) -> None:
    print(f"\nstep 1 at {report['visits']:,} visits, medians of {report['runs']}:")
    print(f"{'work_mem':>9} {'mode':>13} {'seconds':>9} {'temp MiB':>9}")
    for work_mem, result in report["work_mem"].items():
        for mode in MODES:
            row = result[mode]
            print(
                f"{work_mem:>9} {mode:>13} {row['total_median_seconds']:>9.1f} {row['total_median_temp_mib']:>9}"
            )
        print(f"{'':>9} {'concurrently / plain':>23} {result['concurrently_over_plain']:>9}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--visits", type=int, default=1_000_000, help="build the demo database at this size")
    source.add_argument("--url", help="an existing database with the reference HospitalDB (not rebuilt)")
    parser.add_argument(
        "--admin-url", help="PostgreSQL superuser URL to build on (default: an embedded server)"
    )
    parser.add_argument(
        "--work-mem", nargs="+", default=["4MB", "256MB"], help="work_mem settings to compare"
    )
    parser.add_argument("--runs", type=int, default=3, help="rounds per setting (medians are reported)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "step1-cost.json")
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"machine": machine(), "runs": args.runs}
    if args.url:
        report |= report_on(args.url, args.work_mem, args.runs)
    else:
        with tempfile.TemporaryDirectory(prefix="step1-cost-") as scratch:
            with postgres_admin(args.admin_url, Path(scratch)) as admin_url:
                name = "hospitaldb_bench_step1"
                try:
                    url = build_database(admin_url, name, args.visits)
                    with_views(url)
                    report |= report_on(url, args.work_mem, args.runs)
                finally:
                    drop_databases(admin_url, [name])
    print_table(report)
    return write_report(report, args.json)


if __name__ == "__main__":
    main()
