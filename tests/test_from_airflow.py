"""The cutover plan of docs/from-airflow.md: every command it marks `# tested` runs, in its order,
on a copy of the demo HospitalDB, and does what the page says: the dry run changes nothing, the
refresh publishes everything, and the reader sees it in etl_audit.data_status."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import checksums, query

PAGE = PROJECT_ROOT / "docs" / "from-airflow.md"
HOSPITALDB = Path(sys.executable).with_name("hospitaldb")


def tested_commands() -> list[str]:
    """The page's commands marked `# tested`, in page order, without their comments."""
    blocks = re.findall(r"```bash\n(.*?)```", PAGE.read_text(), re.DOTALL)
    return [
        line.split("#", 1)[0].strip()
        for block in blocks
        for line in block.splitlines()
        if re.search(r"#\s*tested\b", line)
    ]


def test_the_page_marks_the_commands_of_each_stage():
    commands = tested_commands()
    assert commands[:3] == ["hospitaldb validate", "hospitaldb refresh --dry-run", "hospitaldb lineage"]
    assert commands[3] == "hospitaldb refresh"
    assert commands[4].startswith("psql -c ")


def test_the_cutover_commands_do_what_the_page_says(demo_database, least_privilege, prefect):
    env = {**os.environ, "PREFECT_API_URL": prefect, "HOSPITALDB_DATABASE_URL": least_privilege.refresher_url}
    before = checksums(demo_database)
    validate, dry_run, lineage, refresh, status = tested_commands()

    for command in (validate, dry_run, lineage):
        done = run(command, env)
        assert done.returncode == 0, f"{command}: {done.stdout}{done.stderr}"
        if command == dry_run:
            assert "HospitalDB dry run: rolled back, nothing changed" in done.stdout
        if command == lineage:
            assert "dashboards.daily_revenue <- reporting.revenue_summary" in done.stdout
    assert checksums(demo_database) == before, "the dry run changed data"

    done = run(refresh, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "HospitalDB refresh completed" in done.stdout
    assert checksums(demo_database) != before

    # The page's psql query, as the read-only role a BI tool uses.
    sql = shlex.split(status)[2]
    rows = query(least_privilege.reader_url, sql)
    assert len(rows) == 10 and all(published is not None and not stale for _, published, stale in rows)


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    arguments = shlex.split(command)
    assert arguments[0] == "hospitaldb", command
    return subprocess.run(
        [str(HOSPITALDB), *arguments[1:]],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
