"""dbt side by side: the same ten objects built by dbt and refreshed by this flow, on one database.

    python benchmarks/dbt_compare.py --visits 1000000

dbt-core and dbt-postgres live in a virtualenv of their own (--dbt-venv, created and filled
here when missing; never in the project's requirements). The dbt models are written from the
reference warehouse's own SQL, so both build the same rows: each object's from the query its
step computes into a temporary table (a dbt `table`, rebuilt and swapped in by rename; until
1.9.0 the four analytics objects were materialized views, and dbt's `materialized_view`). dbt runs with
--threads (default 4): its models in parallel, as it is used.

Measured in one run, after one warm-up of each: wall time of `dbt run` and of the flow
(medians of --runs), and a reader process querying every object of the side being measured
every 50 ms (its maximum wait is how long a dashboard query was blocked). Then the contents
are compared both ways (EXCEPT in each direction, on the model's columns). Prints a table and
writes JSON (--json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pglast
from pglast import ast
from pglast.stream import RawStream
from psycopg2 import sql
from refresh_bench import (
    LAST_RUN_STEPS,
    build_database,
    drop_databases,
    flow_run,
    latency_summary,
    machine,
    median,
    postgres_admin,
    prefect_api,
    query_value,
    reader_process,
    timed,
    write_report,
)
from sqlalchemy.engine import make_url

from hospitaldb.engine.sql.analysis import analyse_steps, relation_name, temp_table_created, walk
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.paths import PROJECT_ROOT

STEP1 = "refresh_phase2_materialized_views"

DBT_SCHEMA = "dbt_bench"
DBT_PACKAGES = ["dbt-core>=1.11,<1.12", "dbt-postgres<2"]
REFERENCE = re.compile(r"\b(staging|analytics|reporting|dashboards)\.(\w+)\b")


def model_queries() -> dict[str, tuple[str, str]]:
    """Object name -> (dbt materialization, its query), from the reference SQL, in pipeline order.

    Every step computes each object's new contents into a temporary table, then merges them in:
    that query is the model's, a dbt `table` (rebuilt and swapped in by rename).
    """
    models: dict[str, tuple[str, str]] = {}
    for step_sql in analyse_steps(SqlFiles()).values():
        computed: dict[str, str] = {}  # temporary table -> its query
        for statement in step_sql.statements:
            tree = pglast.parse_sql(statement.text)[0].stmt
            temp = temp_table_created(tree)
            if temp and isinstance(tree, ast.CreateTableAsStmt):
                computed[temp] = RawStream()(tree.query)
            elif isinstance(tree, ast.InsertStmt):
                source = {
                    relation_name(node) for node in walk(tree.selectStmt) if isinstance(node, ast.RangeVar)
                }
                for name in source & set(computed):
                    models[relation_name(tree.relation)] = ("table", computed[name])
    return models


def dbt_project(
    folder: Path,
    url: str,
    threads: int,
    schemas: dict[str, str] | None = None,
    written: Path | None = None,
    variables: dict[str, Any] | None = None,
) -> Path:
    """A dbt project whose ten models build the same objects, in schema dbt_bench.

    schemas: dbt target -> its schema (the first is the default target); written: a folder of
    models written by hand, each replacing the generated model of its name; variables: dbt vars.
    """
    schemas = schemas or {"bench": DBT_SCHEMA}
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(
        "name: hospitaldb_bench\nversion: '1.0'\nprofile: hospitaldb_bench\nmodel-paths: [models]\n"
        + f"vars: {json.dumps(variables or {})}\n"
    )
    (folder / "models" / "sources.yml").write_text(
        "version: 2\nsources:\n  - name: staging\n    schema: staging\n    tables:\n"
        + "".join(
            f"      - name: {table}\n"
            for table in ("patients", "branches", "doctors", "visits", "billing", "payments")
        )
    )
    for name, (materialized, query) in model_queries().items():

        def reference(match: re.Match[str]) -> str:
            schema, table = match[1], match[2]
            return (
                f"{{{{ source('staging', '{table}') }}}}"
                if schema == "staging"
                else f"{{{{ ref('{table}') }}}}"
            )

        model = name.split(".")[1]
        by_hand = written / f"{model}.sql" if written else None
        (folder / "models" / f"{model}.sql").write_text(
            by_hand.read_text()
            if by_hand and by_hand.exists()
            else f"{{{{ config(materialized='{materialized}') }}}}\n{REFERENCE.sub(reference, query)}\n"
        )
    parts = make_url(url)
    (folder / "profiles.yml").write_text(
        json.dumps(
            {
                "hospitaldb_bench": {
                    "target": next(iter(schemas)),
                    "outputs": {
                        target: {
                            "type": "postgres",
                            "host": parts.host or "127.0.0.1",
                            "port": parts.port or 5432,
                            "user": parts.username,
                            "password": parts.password or "",
                            "dbname": parts.database,
                            "schema": schema,
                            "threads": threads,
                        }
                        for target, schema in schemas.items()
                    },
                }
            }
        )
    )
    return folder


def dbt_binary(venv: Path) -> Path:
    dbt = venv / "bin" / "dbt"
    if not dbt.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *DBT_PACKAGES], check=True)
    return dbt


def dbt_run(dbt: Path, project: Path, *options: str) -> float:
    """Seconds of one `dbt run` with options (a target, --full-refresh)."""

    def run() -> None:
        done = subprocess.run(
            [
                str(dbt),
                "run",
                "--project-dir",
                str(project),
                "--profiles-dir",
                str(project),
                "--quiet",
                *options,
            ],
            capture_output=True,
            text=True,
            # dbt imports every module named dbt_* on its path as a plugin: this file among them.
            env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"},
        )
        if done.returncode:
            raise RuntimeError(done.stdout[-3000:] + done.stderr[-3000:])

    return timed(run)


def differences(url: str, name: str, columns: list[str], other: str | None = None) -> tuple[int, int]:
    """Rows in the flow's object (or in schema other's) and not in dbt's, and the other way round."""
    listed = sql.SQL(", ").join(sql.Identifier(column) for column in columns)
    model = name.split(".")[1]
    flow = sql.Identifier(other, model) if other else sql.Identifier(*name.split("."))
    dbt = sql.Identifier(DBT_SCHEMA, model)
    only = "SELECT count(*) FROM (SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b}) AS d"
    return (
        query_value(url, sql.SQL(only).format(cols=listed, a=flow, b=dbt)),
        query_value(url, sql.SQL(only).format(cols=listed, a=dbt, b=flow)),
    )


def model_columns(url: str, name: str) -> list[str]:
    import psycopg2

    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
            "ORDER BY attnum",
            (f"{DBT_SCHEMA}.{name.split('.')[1]}",),
        )
        return [row[0] for row in cursor.fetchall()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/dbt_compare.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="dbt's threads")
    parser.add_argument(
        "--parallel-views", type=int, default=2, help="the flow's parallel_views, measured beside it serial"
    )
    parser.add_argument("--dbt-venv", type=Path, default=PROJECT_ROOT / "benchmarks" / ".dbt-venv")
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument("--prefect-api-url", help="a running Prefect server (default: start one)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "dbt.json")
    args = parser.parse_args(argv)
    dbt = dbt_binary(args.dbt_venv)
    version = subprocess.run([str(dbt), "--version"], capture_output=True, text=True).stdout.split("\n")[1]
    report: dict[str, Any] = {
        "machine": machine(),
        "visits": args.visits,
        "runs": args.runs,
        "dbt": version.split(":")[-1].strip(),  # "  - installed: 1.11.16"
    }
    models = model_queries()
    with tempfile.TemporaryDirectory(prefix="hospitaldb-dbt-") as scratch:
        with (
            postgres_admin(args.admin_url, Path(scratch)) as admin_url,
            prefect_api(args.prefect_api_url, Path(scratch) / "prefect-home") as api_url,
        ):
            os.environ["PREFECT_API_URL"] = api_url
            url = build_database(admin_url, "hospitaldb_bench_dbt", args.visits)
            project = dbt_project(Path(scratch) / "dbt", url, args.threads)
            dbt_objects = [f"{DBT_SCHEMA}.{name.split('.')[1]}" for name in models]
            dbt_run(dbt, project)  # warm-up: creates the models
            flow_run(url)  # warm-up: fills the flow's objects
            flow_seconds, dbt_seconds, flow_waits, dbt_waits = [], [], [], []
            parallel_seconds, parallel_waits, step1 = [], [], {"serial": [], "parallel": []}
            for _ in range(args.runs):
                with reader_process(url, 0.05, dbt_objects) as latencies:
                    dbt_seconds.append(dbt_run(dbt, project))
                dbt_waits.extend(latencies)
                with reader_process(url, 0.05) as latencies:
                    flow_seconds.append(flow_run(url))
                flow_waits.extend(latencies)
                step1["serial"].append(LAST_RUN_STEPS[STEP1])
                with reader_process(url, 0.05) as latencies:
                    parallel_seconds.append(flow_run(url, parallel_views=args.parallel_views))
                parallel_waits.extend(latencies)
                step1["parallel"].append(LAST_RUN_STEPS[STEP1])
            report["objects"] = {
                name: dict(
                    zip(
                        ("flow_only_rows", "dbt_only_rows"),
                        differences(url, name, model_columns(url, name)),
                        strict=True,
                    )
                )
                for name in models
            }
            drop_databases(admin_url, ["hospitaldb_bench_dbt"])
    report.update(
        {
            "dbt_seconds": dbt_seconds,
            "flow_seconds": flow_seconds,
            "dbt_median": median(dbt_seconds),
            "flow_median": median(flow_seconds),
            "flow_over_dbt": round(median(flow_seconds) / median(dbt_seconds), 3),
            "parallel_views": args.parallel_views,
            "flow_parallel_seconds": parallel_seconds,
            "flow_parallel_median": median(parallel_seconds),
            "flow_parallel_over_dbt": round(median(parallel_seconds) / median(dbt_seconds), 3),
            "step1_seconds": step1,
            "step1_median": {mode: median(values) for mode, values in step1.items()},
            "reader_during_dbt": latency_summary(dbt_waits),
            "reader_during_flow": latency_summary(flow_waits),
            "reader_during_flow_parallel": latency_summary(parallel_waits),
            "contents_equal": all(not any(counts.values()) for counts in report["objects"].values()),
        }
    )
    print(
        f"\n  {args.visits:,} visits, medians of {args.runs}:\n"
        f"  dbt run ({args.threads} threads) {report['dbt_median']:8.2f} s   reader max {report['reader_during_dbt']['max_ms']:8.1f} ms\n"
        f"  flow                  {report['flow_median']:8.2f} s   reader max {report['reader_during_flow']['max_ms']:8.1f} ms\n"
        f"  flow, parallel_views={args.parallel_views} {report['flow_parallel_median']:8.2f} s   reader max {report['reader_during_flow_parallel']['max_ms']:8.1f} ms\n"
        f"  step 1 serial / parallel {report['step1_median']['serial']:6.2f} s / {report['step1_median']['parallel']:6.2f} s\n"
        f"  flow / dbt            {report['flow_over_dbt']:8.3f}   parallel {report['flow_parallel_over_dbt']:8.3f}\n"
        f"  contents equal both ways: {report['contents_equal']}"
    )
    return write_report(report, args.json)


if __name__ == "__main__":
    main()
