"""The README's Deploy block, run as written: a Prefect server, deploy.sh, a worker, a nightly run.

In one bash, as a person pastes it, in a home of the test's own (its `~/.pgpass` holds the refresher's
password, as the README says), on loopback: the example's names are replaced by the test's (the
database, the SMTP server, a free port for 4200), nothing else. The first line is checked, not run:
the suite's virtualenv already holds what `pip install .` installs, and a test reaches no package
index; its `activate` is what puts `prefect` and `python` first on PATH, as the test does.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.db import add_source_rows, scalar
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.pages import commands_of, run_script, shell_blocks
from hospitaldb_testing.prefect_servers import free_port, migrated_database
from hospitaldb_testing.receivers import SMTP_PASSWORD, SMTP_USER

pytestmark = pytest.mark.e2e

INSTALL = "python3 -m venv .venv && . .venv/bin/activate && pip install ."
EXAMPLE_DATABASE_URL = "postgresql://hospitaldb_refresher@db.hospital.example:5432/hospitaldb"


def deploy_block() -> list[str]:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    return commands_of(shell_blocks(readme.split("## Deploy\n", 1)[1])[0])


def test_the_deploy_block_installs_starts_a_server_deploys_and_runs_a_worker():
    commands = deploy_block()
    assert commands[0] == INSTALL
    assert commands[1].startswith("prefect server start") and commands[1].endswith("&")
    assert "bash deployments/deploy.sh" in commands
    assert "prefect worker start --pool hospitaldb-pool &" in commands
    assert commands[-1] == "prefect deployment run 'hospitaldb-refresh/nightly' --watch"
    assert EXAMPLE_DATABASE_URL in " ".join(commands)


def test_the_readme_deploy_block_runs_as_written(demo_database, least_privilege, tmp_path, smtp_server):
    refresher = make_url(least_privilege.refresher_url)
    home = tmp_path / "home"
    (home / ".prefect").mkdir(parents=True)
    pgpass = home / ".pgpass"
    pgpass.write_text(f"*:*:*:{refresher.username}:{least_privilege.password}\n")
    pgpass.chmod(0o600)
    # A new server's database, already at Prefect's schema (as any second start of a server).
    shutil.copy2(migrated_database(), home / ".prefect" / "prefect.db")
    ours = refresher.set(password=None).render_as_string(hide_password=False)
    port = str(free_port())
    env = {
        "HOME": str(home),
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",  # what `activate` does
        "LANG": "C.UTF-8",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        # Where the example says smtp.hospital.example: the test's receiver, on loopback.
        "HOSPITALDB_SMTP_PORT": str(smtp_server.port),
        "HOSPITALDB_SMTP_TYPE": "INSECURE",
        "HOSPITALDB_SMTP_USERNAME": SMTP_USER,
        "HOSPITALDB_SMTP_PASSWORD": SMTP_PASSWORD,
    }
    add_source_rows(demo_database)
    typed = [
        command.replace("4200", port)
        .replace(EXAMPLE_DATABASE_URL, ours)
        .replace("smtp.hospital.example", "127.0.0.1")
        for command in deploy_block()[1:]
    ]
    output = run_script(typed, env, tmp_path / "deploy-block.log")
    assert "Completed" in output, output
    assert_matches_source(demo_database)
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs WHERE outcome = 'completed'") == 1
    )
    # The freshness check is deployed active: run by the worker when the hour's :15 falls inside
    # this test, it finds the never-refreshed data stale, as it should. No other mail.
    subjects = [mail.message["Subject"] for mail in smtp_server.received]
    assert all(subject.startswith("[HospitalDB] Data is stale") for subject in subjects), subjects
