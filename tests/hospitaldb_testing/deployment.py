"""The deployment path in tests: deploy.sh against a real Prefect server, and reading runs back.

Every helper takes the environment `prefect_server` yields, so a server that asks for
credentials (PREFECT_API_AUTH_STRING) is read with them.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.receivers import SMTP_PASSWORD, SMTP_USER, SmtpServer, WebhookServer

AUTH_STRING = "hospitaldb-ops:Auth-String-For-Tests-3f9"


@contextlib.contextmanager
def client_of(env: dict[str, str]) -> Iterator[Any]:
    """A Prefect client for the server in env, with its credentials if it has any."""
    settings = {PREFECT_API_URL: env["PREFECT_API_URL"]}
    if env.get("PREFECT_API_AUTH_STRING"):
        settings[PREFECT_API_AUTH_STRING] = env["PREFECT_API_AUTH_STRING"]
    with temporary_settings(settings), get_client(sync_client=True) as client:
        yield client


def flow_run_state(env: dict[str, str], flow_run_id: str) -> Any:
    with client_of(env) as client:
        return client.read_flow_run(flow_run_id).state


def runs_from_schedules(env: dict[str, str]) -> list[str]:
    """Names of the runs a deployment's schedule created (the server's scheduler), not a test."""
    with client_of(env) as client:
        return [run.name for run in client.read_flow_runs(limit=200) if run.auto_scheduled]


def wait_for_final_state(env: dict[str, str], flow_run_id: str, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = flow_run_state(env, flow_run_id)
        if state and state.is_final():
            return state
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish; last state {state}")


def start_run(env: dict[str, str], deployment: str) -> str:
    """A run of the deployment, as `prefect deployment run NAME` makes it (through the API: the
    command itself is run with --watch where a test follows the docs)."""
    with client_of(env) as client:
        found = client.read_deployment_by_name(deployment)
        return str(client.create_flow_run_from_deployment(found.id).id)


def deploy_environment(
    server_env: dict[str, str], database_url: str, smtp_server: SmtpServer, webhook_server: WebhookServer
) -> dict[str, str]:
    """What deploy.sh reads: the database, the alert blocks' settings, the recipients."""
    return {
        **server_env,
        "HOSPITALDB_DATABASE_URL": database_url,
        # deploy.sh creates the alert blocks from these; the worker reads the recipients.
        "HOSPITALDB_SMTP_HOST": "127.0.0.1",
        "HOSPITALDB_SMTP_PORT": str(smtp_server.port),
        "HOSPITALDB_SMTP_TYPE": "INSECURE",
        "HOSPITALDB_SMTP_USERNAME": SMTP_USER,
        "HOSPITALDB_SMTP_PASSWORD": SMTP_PASSWORD,
        "HOSPITALDB_SLACK_WEBHOOK_URL": webhook_server.url,
        "HOSPITALDB_ALERT_EMAILS": "oncall@hospital.example",
        "PATH": f"{Path(sys.executable).parent}:{server_env['PATH']}",
    }


def deploy(env: dict[str, str], *deploy_args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "deployments/deploy.sh", *deploy_args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def deployed_environment(
    server_env: dict[str, str],
    database_url: str,
    smtp_server: SmtpServer,
    webhook_server: WebhookServer,
    deploy_args: tuple[str, ...] = (),
    again: bool = False,
) -> dict[str, str]:
    """Run deploy.sh against a server (again, to show it is idempotent); return the workers' environment."""
    env = deploy_environment(server_env, database_url, smtp_server, webhook_server)
    for attempt in ("first", "again") if again else ("first",):
        deployed = deploy(env, *deploy_args)
        assert deployed.returncode == 0, f"deploy.sh ({attempt}):\n" + deployed.stdout + deployed.stderr
    return env


def anonymous_block_listing(api_url: str) -> tuple[int, str]:
    """What the server answers to a request for every block with its secrets, without credentials."""
    request = urllib.request.Request(
        api_url + "/block_documents/filter",
        data=json.dumps({"include_secrets": True}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()
