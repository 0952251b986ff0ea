"""dbt's incremental models beside the flow's incremental night: the time, and the rows dbt gets wrong.

    python benchmarks/dbt_incremental.py --visits 1000000 --shares 0.001 0.01 0.1 --admin-url postgresql://...

dbt refreshes less than everything through incremental models: a filter the user writes picks
the source rows that may have changed, and dbt merges what it picks into the model by its
unique_key. The staging tables have no change column, so the filter a user can write is a
lookback on the visit date: benchmarks/dbt_incremental_models/ holds the three models a user
would make incremental that way (per billing line, per visit, per day and branch: the last
--lookback-days days before the newest one the model holds, merged); the other seven stay dbt
tables written from the reference SQL, rebuilt every run (benchmarks/dbt_compare.py).

The base database gets change capture, the flow's full refresh, and both dbt schemas built
(dbt_bench, incremental; dbt_full, always rebuilt). For each share and spread of
incremental_bench's nights, on a fresh copy of the base per run: the night's changes, committed
as a loader would; the flow's full and incremental nights (rolled back, as incremental_bench
times them); then `dbt run` (incremental, dbt_bench) and `dbt run --full-refresh --target full`
(dbt_full), both committed. Rows where the two dbt schemas differ, per model, are the rows the
incremental models got wrong (EXCEPT ALL both ways). Medians of --runs. Prints a table and
writes JSON (--json).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from dbt_compare import dbt_binary, dbt_project, dbt_run, differences, model_columns, model_queries
from incremental_bench import NIGHTS, copy_database, execute, plans, timed_night
from incremental_bench import prepare_base as prepare_flow_base
from refresh_bench import (
    build_database,
    database_url,
    drop_databases,
    machine,
    postgres_admin,
    write_report,
)

from hospitaldb.paths import PROJECT_ROOT as ROOT

WRITTEN = ROOT / "benchmarks" / "dbt_incremental_models"
SCHEMAS = {"bench": "dbt_bench", "full": "dbt_full"}


def prepare_base(url: str, dbt: Path, project: Path) -> None:
    """The flow's base (incremental_bench), and both dbt schemas built."""

    def build_dbt() -> None:
        dbt_run(dbt, project, "--full-refresh")
        dbt_run(dbt, project, "--full-refresh", "--target", "full")

    prepare_flow_base(url, then=build_dbt)


def one_run(url: str, dbt: Path, project: Path, share: float, spread: str, visits: int) -> dict[str, Any]:
    """One night on a copy: the flow's two nights (rolled back), then dbt's two runs and what differs."""
    n = max(1, int(visits * share))
    execute(url, NIGHTS[spread], {"n": n, "every": max(1, int(1 / share))})
    seconds = {
        name: sum(step["seconds"] for step in timed_night(url, plans(mode)).values())
        for name, mode in (("flow_full", "full"), ("flow_incremental", "incremental"))
    }
    seconds["dbt_incremental"] = dbt_run(dbt, project)
    seconds["dbt_full"] = dbt_run(dbt, project, "--full-refresh", "--target", "full")
    wrong = {
        name: sum(differences(url, name, model_columns(url, name), other=SCHEMAS["full"]))
        for name in model_queries()
    }
    return {"seconds": seconds, "wrong_rows": wrong}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    parser.add_argument("--spreads", nargs="+", choices=sorted(NIGHTS), default=["recent", "uniform", "new"])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--lookback-days", type=int, default=3, help="the dbt models' filter")
    parser.add_argument("--threads", type=int, default=4, help="dbt's threads")
    parser.add_argument("--dbt-venv", type=Path, default=ROOT / "benchmarks" / ".dbt-venv")
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument(
        "--base-database", help="a database `hospitaldb demo-db` built, used as the base and kept"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "dbt-incremental.json")
    args = parser.parse_args(argv)
    dbt = dbt_binary(args.dbt_venv)
    nights = []
    with tempfile.TemporaryDirectory(prefix="hospitaldb-dbt-incremental-") as folder:
        with postgres_admin(args.admin_url, Path(folder)) as admin_url:
            base = args.base_database or f"hospitaldb_dbt_incremental_{args.visits}"
            url = (
                database_url(admin_url, base)
                if args.base_database
                else build_database(admin_url, base, args.visits)
            )
            variables = {"lookback_days": args.lookback_days}
            prepare_base(
                url, dbt, dbt_project(Path(folder) / "base", url, args.threads, SCHEMAS, WRITTEN, variables)
            )
            copies: list[str] = []
            try:
                for share in args.shares:
                    for spread in args.spreads:
                        runs = []
                        for _ in range(args.runs):
                            copies.append(f"{base}_dbt_{len(copies)}")
                            copy_url = copy_database(admin_url, base, copies[-1], url)
                            project = dbt_project(
                                Path(folder) / copies[-1], copy_url, args.threads, SCHEMAS, WRITTEN, variables
                            )
                            runs.append(one_run(copy_url, dbt, project, share, spread, args.visits))
                            drop_databases(admin_url, [copies[-1]])
                        nights.append(summary(share, spread, args.visits, runs))
            finally:
                drop_databases(admin_url, copies if args.base_database else [base, *copies])
    print(
        f"{'share':>7} {'spread':<8}"
        + "".join(f"{name + ' s':>20}" for name in CONTENDERS)
        + "  dbt wrong rows"
    )
    for night in nights:
        times = "".join(f"{night['seconds'][name]:>20.2f}" for name in CONTENDERS)
        print(f"{night['share']:>7.3f} {night['spread']:<8}{times}  {sum(night['wrong_rows'].values()):>14}")
    report = {
        "visits": args.visits,
        "runs": args.runs,
        "lookback_days": args.lookback_days,
        "dbt_threads": args.threads,
        "nights": nights,
        "machine": machine(),
    }
    return write_report(report, args.json)


CONTENDERS = ("flow_full", "flow_incremental", "dbt_full", "dbt_incremental")


def summary(share: float, spread: str, visits: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A night's medians of seconds per contender, and the rows dbt's incremental models got wrong."""
    return {
        "share": share,
        "spread": spread,
        "changed_visits": max(1, int(visits * share)),
        "seconds": {name: statistics.median(run["seconds"][name] for run in runs) for name in CONTENDERS},
        "wrong_rows": runs[0]["wrong_rows"],
    }


if __name__ == "__main__":
    main()
