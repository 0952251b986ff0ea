"""The benchmark's own code, at a tiny size: it measures what it says (timings are not asserted)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hospitaldb import settings
from hospitaldb.engine.db.database import DATABASE_URL_ENV
from hospitaldb.engine.steps import STEPS
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import query


@pytest.fixture(autouse=True)
def one_benchmark_at_a_time() -> Iterator[None]:
    """The benchmarks name their databases (hospitaldb_bench_300, ...) and check that none is left:
    where test processes share one server (HOSPITALDB_TEST_DATABASE_URL), one runs at a time."""
    if not settings.TEST_DATABASE_URL.read():
        yield  # each test process has its embedded server
        return
    lock = PROJECT_ROOT / "build" / "test-cache" / "benchmarks.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield


def main(argv: list[str], script: str = "refresh_bench.py") -> dict:
    """A benchmark as a user runs it; its report is the JSON it writes."""
    subprocess.run(
        [sys.executable, f"benchmarks/{script}", *argv], cwd=PROJECT_ROOT, env=os.environ, check=True
    )
    return json.loads(Path(argv[argv.index("--json") + 1]).read_text())


def test_benchmark_measures_every_figure_and_writes_json(postgres_admin_url, prefect, tmp_path, monkeypatch):
    # The benchmark sets these for its own runs; give them back to the other tests afterwards.
    monkeypatch.setenv("PREFECT_API_URL", prefect)
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://unused@127.0.0.1:1/unused")
    output = tmp_path / "bench.json"

    report = main(
        [
            "--visits", "300", "--runs", "1", "--skip-scale", "--overhead-modes", "server",
            "--overhead-visits", "200", "--admin-url", postgres_admin_url, "--prefect-api-url", prefect,
            "--json", str(output),
        ]
    )  # fmt: skip

    assert json.loads(output.read_text())["visits"] == 300
    result = report["refresh"]["300"]
    assert len(result["baseline_psql_seconds"]) == len(result["flow_seconds"]) == 1
    assert result["flow_over_baseline"] == round(result["flow_median"] / result["baseline_psql_median"], 3)
    (sql_seconds,) = result["flow_sql_seconds"]
    assert 0 < sql_seconds < result["flow_seconds"][0], "the steps' SQL is part of the flow run"
    assert {cost["check"] for cost in result["checks"]} >= {
        "shrink_guard",
        "source checks",
        "unbilled_visits",
    }
    assert 0 < result["checks_median_total_seconds"] < result["flow_median"]
    assert result["reader_during_refresh"]["queries"] >= 10, "the reader read every object at least once"
    assert result["reader_idle"]["queries"] >= 10
    assert 0 < result["flow_process_peak_rss_mib"] < result["peak_rss_mib"] * 4
    assert all({"ms", "object", "during"} <= set(event) for event in result["reader_slowest"])
    overhead = report["fixed_overhead"]["server"]
    assert overhead["refresh_median"] > 0 and overhead["trivial_median"] > 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["postgresql"]
    leftovers = query(
        postgres_admin_url, "SELECT datname FROM pg_database WHERE datname LIKE 'hospitaldb_bench_%'"
    )
    assert leftovers == [], "the benchmark drops its databases"


def test_a_traced_run_again_with_fewer_parallel_workers(postgres_admin_url, prefect, tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect)
    monkeypatch.setenv(DATABASE_URL_ENV, "postgresql://unused@127.0.0.1:1/unused")
    output = tmp_path / "trace.json"

    report = main(
        [
            "--visits", "300", "--skip-scale", "--trace", "--parallel-workers-per-query", "0",
            "--overhead-modes", "--admin-url", postgres_admin_url, "--prefect-api-url", prefect, "--json", str(output),
        ]
    )  # fmt: skip

    result = report["refresh"]["300"]
    again = result["parallel_workers_per_query=0"]
    for traced in (result, again):
        assert traced["reader_during_refresh"]["queries"] >= 10
        assert traced["flow_process_peak_rss_mib"] > 0
        assert float(traced["flow_seconds"]) > 0


def test_step1_cost_measures_both_refreshes_and_what_spilled(postgres_admin_url, tmp_path):
    output = tmp_path / "step1.json"

    report = main(
        [
            "--visits", "3000", "--runs", "1", "--work-mem", "64kB", "256MB",
            "--admin-url", postgres_admin_url, "--json", str(output),
        ],
        script="step1_cost.py",
    )  # fmt: skip

    views = ["analytics.mv_billing_summary", "analytics.mv_visit_summary", "analytics.mv_patient_summary",
             "analytics.mv_branch_billing_summary"]  # fmt: skip
    tiny, ample = report["work_mem"]["64kB"], report["work_mem"]["256MB"]
    for result in (tiny, ample):
        for mode in ("concurrently", "plain"):
            assert list(result[mode]["views"]) == views, "every view of step 1, in pipeline order"
            assert all(view["median_seconds"] > 0 for view in result[mode]["views"].values())
    billing = "analytics.mv_billing_summary"
    # 6,000 billing lines do not fit in 64 kB: both refreshes spill, and CONCURRENTLY's extra sorts
    # (the duplicate check, the diff) spill more. With 256 MB nothing spills.
    assert (
        tiny["concurrently"]["views"][billing]["median_temp_bytes"]
        > tiny["plain"]["views"][billing]["median_temp_bytes"]
        > 0
    )
    assert all(
        view["median_temp_bytes"] == 0
        for mode in ("concurrently", "plain")
        for view in ample[mode]["views"].values()
    )
    assert report["server"]["postgresql"] and report["server"]["visits"] == 3000
    leftovers = query(
        postgres_admin_url, "SELECT datname FROM pg_database WHERE datname LIKE 'hospitaldb_bench_%'"
    )
    assert leftovers == [], "the benchmark drops its database"


def test_capture_overhead_times_a_night_without_and_with_capture(postgres_admin_url, tmp_path):
    report = main(
        ["--visits", "3000", "--share", "0.05", "--runs", "1", "--admin-url", postgres_admin_url,
         "--json", str(tmp_path / "capture.json")],
        script="capture_overhead.py",
    )  # fmt: skip

    assert report["new_visits"] == 150 and report["moved_or_removed"] == 15
    for side in ("without_capture", "with_capture"):
        assert report[side]["median_seconds"] > 0
        assert set(report[side]["statements"]) == {
            "insert visits", "insert bills", "insert payments", "move payments", "mark bills paid", "remove payments"
        }  # fmt: skip
    assert report["ratio"] > 0 and report["goal"] == 1.15


def test_incremental_bench_times_whole_nights_full_and_incremental_and_finds_no_drift(
    postgres_admin_url, tmp_path
):
    report = main(
        ["--visits", "3000", "--shares", "0.01", "0.05", "--spreads", "recent", "uniform", "new", "--runs", "1",
         "--reader", "--admin-url", postgres_admin_url, "--json", str(tmp_path / "incremental.json"),
         "--svg", str(tmp_path / "incremental.svg")],
        script="incremental_bench.py",
    )  # fmt: skip

    shares = [(night["share"], night["spread"]) for night in report["nights"]]
    assert shares == [(s, spread) for s in (0.01, 0.05) for spread in ("recent", "uniform", "new")]
    for night in report["nights"]:
        assert night["changed_visits"] == round(3000 * night["share"])
        full, incremental = night["contenders"]["full"], night["contenders"]["incremental"]
        for step in STEPS:
            assert full[step]["changed_keys"] is None and full[step]["seconds"] > 0
            assert incremental[step]["changed_keys"] > 0, "each step took the keys the one before logged"
        assert incremental["night_seconds"] == pytest.approx(
            sum(incremental[step]["seconds"] for step in STEPS)
        )
        assert night["drift_rows"] == dict.fromkeys(STEPS, 0)
        for contender in ("full", "incremental"):  # a reader queried all ten objects during a night
            assert night["reader"][contender]["queries"] >= 10
            assert night["reader"][contender]["max_ms"] >= night["reader"][contender]["p99_ms"] > 0
    drawn = (tmp_path / "incremental.svg").read_text()
    assert drawn.count("<polyline") == 4, "full, and incremental for each spread"
    assert "1.0%" in drawn and "5.0%" in drawn
