"""A whole night, incremental against full, after nights that changed a share of the visits.

    python benchmarks/incremental_bench.py --visits 1000000 --shares 0.001 0.01 0.1 --admin-url postgresql://...

Builds the demo database, installs change capture and refreshes it full once. Then for each share
and spread, on a copy of that database: a night moves that share of visits a day earlier and
halves as many payments (--spreads recent: the most recent visits, uniform: spread over the
history), or adds that many visits a day after the newest, each billed (new), committed as a
loader would. Then the three steps run in order, each in the same transaction, rolled back after
(so every timed night starts from the same state): today's night, every step's full form alone,
and the incremental night, every step's incremental form, each taking the keys the step before
logged. Medians of --runs, per step and for the night, of seconds and of WAL bytes written. Last,
mode full's own pass (the incremental form, then the full form, in one transaction) counts the
rows the full forms still change after the incremental ones: drift, which must be 0. --reader: one more night of each contender with a
reader querying all ten objects every 20 ms, its slowest and p99 query. Prints a table and writes
JSON (--json); --svg draws the night's time against the share changed.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from refresh_bench import (
    build_database,
    database_url,
    drop_databases,
    latency_summary,
    libpq_url,
    machine,
    postgres_admin,
    reader_process,
    write_report,
)

from hospitaldb.engine.changes.capture import install
from hospitaldb.engine.changes.modes import ModeRequest
from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.run.plans import StepPlan, plan_steps
from hospitaldb.engine.run.runner import run_step_sql, run_step_transaction
from hospitaldb.engine.run.statements import drop_temp_tables
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS
from hospitaldb.paths import PROJECT_ROOT as ROOT

PHASE2, PHASE3, DASHBOARDS = STEPS
LOGGER = logging.getLogger("hospitaldb.bench.incremental")
LIMITS = Limits(statement_timeout_seconds=0, lock_timeout_seconds=60)
REPORTING = ("patient_summary", "branch_summary", "revenue_summary")
# A night, by spread: %(n)s visits moved a day earlier and as many payments halved, the most
# recent ones or spread over the history; or %(n)s new visits, a day after the newest, each billed.
MOVED = (
    "UPDATE staging.visits SET visit_date = visit_date - 1 WHERE visit_id IN ({which});"
    "UPDATE staging.payments SET amount = round(amount / 2, 2) WHERE payment_id IN ("
    "  SELECT p.payment_id FROM staging.payments AS p JOIN staging.billing AS b USING (billing_id)"
    "  WHERE b.visit_id IN ({which}) LIMIT %(n)s)"
)
NIGHTS = {
    "recent": MOVED.format(which="SELECT visit_id FROM staging.visits ORDER BY visit_id DESC LIMIT %(n)s"),
    "uniform": MOVED.format(
        which="SELECT visit_id FROM staging.visits WHERE visit_id %% %(every)s = 0 LIMIT %(n)s"
    ),
    "new": (
        "INSERT INTO staging.visits SELECT m.top + row_number() OVER (), v.patient_id, v.doctor_id, v.branch_id, "
        "m.newest + 1, v.visit_type FROM (SELECT * FROM staging.visits ORDER BY visit_id LIMIT %(n)s) AS v, "
        "(SELECT max(visit_id) AS top, max(visit_date) AS newest FROM staging.visits) AS m;"
        "INSERT INTO staging.billing SELECT m.top + row_number() OVER (), v.visit_id, 'CONSULT', 120, 'pending', "
        "v.visit_date FROM (SELECT * FROM staging.visits ORDER BY visit_id DESC LIMIT %(n)s) AS v, "
        "(SELECT max(billing_id) AS top FROM staging.billing) AS m"
    ),
}


def plans(mode: str) -> dict[str, StepPlan]:
    return plan_steps(list(STEPS), False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest(mode))[0]


def timed_night(url: str, night_plans: dict[str, StepPlan]) -> dict[str, Any]:
    """Every step, in order, in one transaction rolled back after: seconds, changed keys and drift of each.

    Each step reads what the one before wrote in the same transaction, its logged keys included,
    so every timed night starts from the same committed state.
    """
    connection = target_from_url(url, "benchmark").connect(LIMITS)
    steps: dict[str, Any] = {}
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        for step, plan in night_plans.items():
            wal_before = wal_position(connection)
            started = time.perf_counter()
            result = run_step_sql(connection, plan, logger=LOGGER)
            steps[step] = {
                "seconds": time.perf_counter() - started,
                "changed_keys": result.mode.changed_keys,
                "drift_rows": sum(sum(counts.values()) for counts in result.drift.values()),
                "wal_bytes": wal_bytes_since(connection, wal_before),
            }
            drop_temp_tables(connection, step, plan.every_temp_table)
        return steps
    finally:
        connection.rollback()
        connection.close()


def wal_position(connection: Any) -> str:
    """Where the server's WAL is being written now (the steps are alone on the server when timed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_insert_lsn()")
        return cursor.fetchone()[0]


def wal_bytes_since(connection: Any, position: str) -> int:
    """WAL written since position: what a step costs a replica and the archive, rolled back or not."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)::bigint", (position,))
        return cursor.fetchone()[0]


def execute(url: str, statement: Any, params: Any = None, autocommit: bool = False) -> None:
    """One statement in its own session, committed, the session closed (a template copy needs none open)."""
    connection = psycopg2.connect(libpq_url(url))
    connection.autocommit = autocommit
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
        connection.commit()
    finally:
        connection.close()


def one_night(
    url: str, share: float, spread: str, visits: int, runs: int, reader: bool = False
) -> dict[str, Any]:
    n = max(1, int(visits * share))
    execute(url, NIGHTS[spread], {"n": n, "every": max(1, int(1 / share))})
    contenders = {
        # Today's night: the full forms alone (no drift check).
        "full": {step: replace(plan, incremental=None) for step, plan in plans("full").items()},
        "incremental": plans("incremental"),
    }
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    for _ in range(runs):
        for name, night_plans in contenders.items():
            samples[name].append(timed_night(url, night_plans))
    # mode full where an incremental form exists: the incremental form, then the full form, in
    # one transaction; whatever the full form still changes is drift.
    drift = timed_night(url, plans("full"))
    # A reader of all ten objects every 20 ms beside one more night of each contender: its slowest
    # query. Kept apart from the timed runs, which it would slow on two cores.
    readers = {}
    for name, night_plans in contenders.items() if reader else ():
        with reader_process(libpq_url(url)) as readings:
            timed_night(url, night_plans)
        readers[name] = latency_summary(readings)
    nights: dict[str, Any] = {}
    for name, runs_of in samples.items():
        nights[name] = {
            step: {
                "seconds": statistics.median(run[step]["seconds"] for run in runs_of),
                "changed_keys": runs_of[0][step]["changed_keys"],
                "wal_bytes": statistics.median(run[step]["wal_bytes"] for run in runs_of),
            }
            for step in STEPS
        }
        for total in ("seconds", "wal_bytes"):
            nights[name][f"night_{total}"] = statistics.median(
                sum(run[step][total] for step in STEPS) for run in runs_of
            )
    return {
        "share": share,
        "spread": spread,
        "changed_visits": n,
        "contenders": nights,
        "drift_rows": {step: drift[step]["drift_rows"] for step in STEPS},
        **({"reader": readers} if readers else {}),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    parser.add_argument("--spreads", nargs="+", choices=sorted(NIGHTS), default=["recent", "uniform"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reader", action="store_true", help="also time a reader's queries during a night")
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument(
        "--base-database",
        help="a database `hospitaldb demo-db` built on the admin URL's server, used as the base and kept "
        "(10M visits take 9 minutes to build)",
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "incremental.json")
    parser.add_argument("--svg", type=Path, help="also draw the result (time against share changed) here")
    args = parser.parse_args(argv)
    nights = []
    with tempfile.TemporaryDirectory(prefix="hospitaldb-incremental-") as folder:
        with postgres_admin(args.admin_url, Path(folder)) as admin_url:
            base = args.base_database or f"hospitaldb_incremental_{args.visits}"
            if args.base_database:
                url = database_url(admin_url, base)
            else:
                url = build_database(admin_url, base, args.visits)
            prepare_base(url)
            copies = []
            try:
                for share in args.shares:
                    for spread in args.spreads:
                        copy = f"{base}_{spread}_{len(copies)}"
                        copies.append(copy)
                        copy_url = copy_database(admin_url, base, copy, url)
                        nights.append(one_night(copy_url, share, spread, args.visits, args.runs, args.reader))
                        drop_databases(admin_url, [copy])
                        # Kept after every night: a 10M night takes a quarter of an hour.
                        args.json.parent.mkdir(parents=True, exist_ok=True)
                        args.json.write_text(
                            json.dumps({"visits": args.visits, "nights": nights}, default=str)
                        )
            finally:
                drop_databases(admin_url, copies if args.base_database else [base, *copies])
    print(
        f"{'share':>7} {'spread':<8}{'visits':>9}"
        + "".join(f"{c + ' s':>16}" for c in CONTENDERS)
        + "".join(f"{c + ' WAL MB':>20}" for c in CONTENDERS)
        + "   drift"
    )
    for night in nights:
        times = "".join(f"{night['contenders'][c]['night_seconds']:>16.2f}" for c in CONTENDERS) + "".join(
            f"{night['contenders'][c]['night_wal_bytes'] / 1e6:>20.1f}" for c in CONTENDERS
        )
        reader = "".join(
            f"   reader during {name}: max {summary['max_ms']} ms, p99 {summary['p99_ms']} ms"
            for name, summary in night.get("reader", {}).items()
        )
        print(
            f"{night['share']:>7.3f} {night['spread']:<8}{night['changed_visits']:>9}{times}"
            f"   {sum(night['drift_rows'].values())}{reader}"
        )
    report = {"visits": args.visits, "runs": args.runs, "nights": nights, "machine": machine()}
    if args.svg:
        args.svg.write_text(chart(report))
    return write_report(report, args.json)


CONTENDERS = ("full", "incremental")
LINES = {  # line: (colour, which nights, which contender)
    "full (today's night)": ("#c0392b", None, "full"),
    "incremental, recent visits changed": ("#2471a3", "recent", "incremental"),
    "incremental, visits spread over the history": ("#27ae60", "uniform", "incremental"),
    "incremental, new visits after the newest": ("#8e44ad", "new", "incremental"),
}


def chart(report: dict[str, Any], width: int = 640, height: int = 360) -> str:
    """A whole night's time against the share of visits changed, one line per contender (SVG)."""
    nights, left, top, right, bottom = report["nights"], 60, 30, 20, 60
    shares = sorted({night["share"] for night in nights})
    longest = max(night["contenders"][c]["night_seconds"] for night in nights for c in CONTENDERS)

    def x(share: float) -> float:
        span = math.log10(shares[-1]) - math.log10(shares[0]) or 1
        return left + (math.log10(share) - math.log10(shares[0])) / span * (width - left - right)

    def y(seconds: float) -> float:
        return height - bottom - seconds / longest * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="{left}" y="18">a whole night, {report["visits"]:,} visits: seconds (median of {report["runs"]}) '
        "by share of visits changed</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for share in shares:
        parts.append(
            f'<text x="{x(share):.0f}" y="{height - bottom + 16}" text-anchor="middle">{share:.1%}</text>'
        )
    for tick in range(0, int(longest) + 1, max(1, int(longest) // 8)):
        parts.append(f'<text x="{left - 8}" y="{y(tick) + 4:.0f}" text-anchor="end">{tick} s</text>')
    for number, (name, (colour, spread, contender)) in enumerate(LINES.items()):
        points = []
        for share in shares:
            values = [
                n["contenders"][contender]["night_seconds"]
                for n in nights
                if n["share"] == share and spread in (None, n["spread"])
            ]
            if values:  # a spread the run did not measure draws no line
                points.append(f"{x(share):.1f},{y(statistics.median(values)):.1f}")
        if not points:
            continue
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'
        )
        parts.append(f'<text x="{left + 12}" y="{top + 14 + number * 16}" fill="{colour}">— {name}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def prepare_base(url: str, then: Callable[[], Any] | None = None) -> None:
    """Capture installed and every object refreshed full, then (then: more to build), analysed.

    The flow's upkeep analyses what each step changed once it committed: the nights are planned
    on the statistics a real night finds (autovacuum may be off, or not there yet).
    """
    connection = psycopg2.connect(libpq_url(url))
    connection.autocommit = True
    try:
        install(connection)
    finally:
        connection.close()
    for plan in plans("full").values():
        run_step_transaction(target_from_url(url, "benchmark"), plan, LIMITS, logger=LOGGER)
    if then:
        then()
    execute(url, "ANALYZE", autocommit=True)


def copy_database(admin_url: str, base: str, copy: str, base_url: str) -> str:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy), sql.Identifier(base))
    execute(admin_url, statement, autocommit=True)
    return base_url.replace(f"/{base}", f"/{copy}", 1)


if __name__ == "__main__":
    main()
