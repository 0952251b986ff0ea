"""`python flows/refresh.py` with no database configured: the embedded demo, built once, reused."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from hospitaldb.local.demo import start_embedded_postgres
from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import checksums, private_temp_dir, scalar

STEP_LINE = re.compile(r"^(refresh_\w+)\s+(\w+)\s+(\d+)\s+[\d.]+\s+[\d,]+\s+(.+)$", re.MULTILINE)
SAMPLES = (PROJECT_ROOT / "README.md", PROJECT_ROOT / "docs" / "get-started.md")


def step_columns(text: str) -> dict[str, tuple[str, str, str]]:
    """Each step's status, statements and checks in a summary (seconds and rows vary with the data)."""
    return {match[1]: (match[2], match[3], match[4].strip()) for match in STEP_LINE.finditer(text)}


def run_local(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "flows/refresh.py", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_help_lists_options_and_steps():
    done = subprocess.run(
        [sys.executable, "flows/refresh.py", "--help"], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0
    for text in ("--database-url", "--steps", "refresh_dashboards", "HOSPITALDB_DATABASE_URL"):
        assert text in done.stdout


def test_local_run_builds_the_embedded_demo_once_and_reuses_it(prefect, demo_database):
    local = private_temp_dir("hospitaldb-local-run-")  # its server outlives the test: not under pytest's root
    env = {k: v for k, v in os.environ.items() if k != "HOSPITALDB_DATABASE_URL"}
    env.update({"PREFECT_API_URL": prefect, "HOSPITALDB_LOCAL_DATA_DIR": str(local)})
    elsewhere = checksums(demo_database)

    first = run_local(env, "--demo-visits", "1000")
    assert first.returncode == 0, first.stderr
    assert "Building the demo HospitalDB (1,000 visits)" in first.stdout
    for step in (
        "refresh_phase2_materialized_views",
        "refresh_phase3_reporting_tables",
        "refresh_dashboards",
    ):
        assert step in first.stdout
    assert str(local / "pgdata") in first.stdout
    for sample in SAMPLES:  # the sample output the docs show is this run's, but for times and rows
        assert step_columns(sample.read_text()) == step_columns(first.stdout), sample.name

    # The README's demo command, where HOSPITALDB_DATABASE_URL names another database: the demo
    # database is refreshed, the other one left alone.
    second = subprocess.run(
        [sys.executable, "dev.py", "demo", "--steps", "refresh_dashboards"],
        cwd=PROJECT_ROOT,
        env={**env, "HOSPITALDB_DATABASE_URL": demo_database},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Building the demo" not in second.stdout
    assert str(local / "pgdata") in second.stdout
    assert checksums(demo_database) == elsewhere, "dev.py demo refreshed HOSPITALDB_DATABASE_URL's database"

    url = start_embedded_postgres(local / "pgdata", delete_at_exit=True).replace("/postgres?", "/hospitaldb?")
    assert scalar(url, "SELECT count(*) FROM staging.visits") == 1000
    assert scalar(url, "SELECT sum(visit_count) FROM dashboards.daily_revenue") == 1000


def test_local_run_reports_a_failure_plainly(tmp_path):
    env = {**os.environ, "HOSPITALDB_LOCAL_DATA_DIR": str(tmp_path)}
    done = run_local(env, "--database-url", "mysql://u:p@h/db")
    assert done.returncode == 2
    assert "Refresh not started: --database-url uses driver 'mysql'" in done.stderr
    assert "Traceback" not in done.stderr
