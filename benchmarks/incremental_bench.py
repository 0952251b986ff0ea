"""The incremental dashboards step against its full form, after nights that changed a share of the visits.

    python benchmarks/incremental_bench.py --visits 1000000 --shares 0.001 0.01 0.1 --admin-url postgresql://...

Builds the demo database, installs change capture and refreshes it full once. Then for each share
and spread (the most recent visits, or visits spread uniformly over the history), on a copy of
that database: a night moves that share of visits a day earlier and halves as many payments
(--spreads recent, uniform), or adds that many visits a day after the newest (new), committed
as a loader would; phase 2 runs full, committed; the reporting step (phase 3) is timed
with and without capture's triggers on the reporting tables (what capturing the refresher's own
writes costs it) and then committed; the dashboards step is timed full and incremental. Every
timed run is one transaction rolled back after, so each starts from the same state; medians of
--runs. Full is the full form alone (no drift check). Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2 import sql
from refresh_bench import build_database, drop_databases, libpq_url, machine, postgres_admin, write_report

from hospitaldb.engine.changes.capture import EVENTS, TRIGGER_PREFIX, install
from hospitaldb.engine.changes.modes import ModeRequest
from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.deadline import Limits
from hospitaldb.engine.run.plans import StepPlan, plan_steps
from hospitaldb.engine.run.runner import run_step_sql, run_step_transaction
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


def plans(mode: str, steps: tuple[str, ...] = STEPS) -> dict[str, StepPlan]:
    return plan_steps(list(steps), False, 0.5, LOGGER, SqlFiles(), mode=ModeRequest(mode))[0]


def timed_rolled_back(url: str, plan: StepPlan) -> tuple[float, Any]:
    connection = target_from_url(url, "benchmark").connect(LIMITS)
    try:
        connection.set_session(isolation_level="REPEATABLE READ")
        started = time.perf_counter()
        result = run_step_sql(connection, plan, logger=LOGGER)
        return time.perf_counter() - started, result
    finally:
        connection.rollback()
        connection.close()


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


def reporting_triggers(url: str, enabled: bool) -> None:
    command = "ALTER TABLE {} ENABLE ALWAYS TRIGGER {}" if enabled else "ALTER TABLE {} DISABLE TRIGGER {}"
    for table in REPORTING:
        for event in (*EVENTS, "truncate"):
            trigger = sql.Identifier(f"{TRIGGER_PREFIX}{event}")
            execute(url, sql.SQL(command).format(sql.Identifier("reporting", table), trigger))


def one_night(url: str, share: float, spread: str, visits: int, runs: int) -> dict[str, Any]:
    n = max(1, int(visits * share))
    target = target_from_url(url, "benchmark")
    execute(url, NIGHTS[spread], {"n": n, "every": max(1, int(1 / share))})
    run_step_transaction(target, plans("full", (PHASE2,))[PHASE2], LIMITS, logger=LOGGER)
    phase3 = plans("full", (PHASE3,))[PHASE3]
    seconds: dict[str, list[float]] = {}
    for enabled in (False, True):
        reporting_triggers(url, enabled)
        side = "phase3_captured" if enabled else "phase3_not_captured"
        seconds[side] = [timed_rolled_back(url, phase3)[0] for _ in range(runs)]
    run_step_transaction(target, phase3, LIMITS, logger=LOGGER)
    incremental = plans("incremental", (DASHBOARDS,))[DASHBOARDS]
    full = replace(plans("full", (DASHBOARDS,))[DASHBOARDS], incremental=None)
    keys = None
    for side, plan in (("dashboards_full", full), ("dashboards_incremental", incremental)):
        seconds[side] = []
        for _ in range(runs):
            elapsed, result = timed_rolled_back(url, plan)
            seconds[side].append(elapsed)
            keys = result.mode.changed_keys if side == "dashboards_incremental" else keys
    medians = {side: statistics.median(values) for side, values in seconds.items()}
    return {"share": share, "spread": spread, "changed_visits": n, "changed_keys": keys, "seconds": medians}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    parser.add_argument("--spreads", nargs="+", choices=sorted(NIGHTS), default=["recent", "uniform"])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "incremental.json")
    parser.add_argument("--svg", type=Path, help="also draw the result (time against share changed) here")
    args = parser.parse_args(argv)
    nights = []
    with tempfile.TemporaryDirectory(prefix="hospitaldb-incremental-") as folder:
        with postgres_admin(args.admin_url, Path(folder)) as admin_url:
            base = f"hospitaldb_incremental_{args.visits}"
            url = build_database(admin_url, base, args.visits)
            connection = psycopg2.connect(libpq_url(url))
            connection.autocommit = True
            try:
                install(connection)
            finally:
                connection.close()
            for step in STEPS:
                run_step_transaction(
                    target_from_url(url, "benchmark"), plans("full")[step], LIMITS, logger=LOGGER
                )
            copies = []
            try:
                for share in args.shares:
                    for spread in args.spreads:
                        copy = f"{base}_{spread}_{len(copies)}"
                        copies.append(copy)
                        copy_url = _copy(admin_url, base, copy, url)
                        nights.append(one_night(copy_url, share, spread, args.visits, args.runs))
                        drop_databases(admin_url, [copy])
            finally:
                drop_databases(admin_url, [base, *copies])
    print(
        f"{'share':>7} {'spread':<8}{'keys':>9}{'phase3 s':>10}{'+capture s':>12}{'dash full s':>13}{'dash incr s':>13}"
    )
    for night in nights:
        s = night["seconds"]
        print(
            f"{night['share']:>7.3f} {night['spread']:<8}{night['changed_keys'] or 0:>9}"
            f"{s['phase3_not_captured']:>10.3f}{s['phase3_captured']:>12.3f}"
            f"{s['dashboards_full']:>13.3f}{s['dashboards_incremental']:>13.3f}"
        )
    report = {"visits": args.visits, "runs": args.runs, "nights": nights, "machine": machine()}
    if args.svg:
        args.svg.write_text(chart(report))
    return write_report(report, args.json)


LINES = {  # contender: (colour, which nights, which time)
    "full": ("#c0392b", None, "dashboards_full"),
    "incremental, recent visits changed": ("#2471a3", "recent", "dashboards_incremental"),
    "incremental, visits spread over the history": ("#27ae60", "uniform", "dashboards_incremental"),
    "incremental, new visits after the newest": ("#8e44ad", "new", "dashboards_incremental"),
}


def chart(report: dict[str, Any], width: int = 640, height: int = 360) -> str:
    """The dashboards step's time against the share of visits changed, one line per contender (SVG)."""
    nights, left, top, right, bottom = report["nights"], 60, 30, 20, 60
    shares = sorted({night["share"] for night in nights})
    longest = max(seconds for night in nights for seconds in night["seconds"].values() if seconds)

    def x(share: float) -> float:
        span = math.log10(shares[-1]) - math.log10(shares[0]) or 1
        return left + (math.log10(share) - math.log10(shares[0])) / span * (width - left - right)

    def y(seconds: float) -> float:
        return height - bottom - seconds / longest * (height - top - bottom)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="12">',
        f'<text x="{left}" y="18">dashboards step, {report["visits"]:,} visits: seconds (median of {report["runs"]}) '
        "by share of visits changed</text>",
        f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
        f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>',
    ]
    for share in shares:
        parts.append(
            f'<text x="{x(share):.0f}" y="{height - bottom + 16}" text-anchor="middle">{share:.1%}</text>'
        )
    for tick in range(int(longest) + 1):
        parts.append(f'<text x="{left - 8}" y="{y(tick) + 4:.0f}" text-anchor="end">{tick} s</text>')
    for number, (name, (colour, spread, side)) in enumerate(LINES.items()):
        points = []
        for share in shares:
            values = [
                n["seconds"][side] for n in nights if n["share"] == share and spread in (None, n["spread"])
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


def _copy(admin_url: str, base: str, copy: str, base_url: str) -> str:
    statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy), sql.Identifier(base))
    execute(admin_url, statement, autocommit=True)
    return base_url.replace(f"/{base}", f"/{copy}", 1)


if __name__ == "__main__":
    main()
