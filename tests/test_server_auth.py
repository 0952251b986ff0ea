"""Only those who should: secrets go only to a Prefect server that asks for credentials, unless nothing
beyond this machine's loopback can reach it, and beyond loopback only over https unless plain http is
accepted on purpose; and such a server answers nobody without them."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from prefect_slack import SlackWebhook
from prefect_sqlalchemy import SqlAlchemyConnector

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.server_guard import (
    accepts_anonymous_requests,
    listening_beyond_loopback,
)
from hospitaldb_testing.db import scalar
from hospitaldb_testing.deployment import (
    AUTH_STRING,
    anonymous_block_listing,
    client_of,
    deploy,
    deploy_environment,
)
from hospitaldb_testing.prefect_servers import prefect_server

pytestmark = pytest.mark.e2e

DATABASE_URL = "postgresql://refresher:Pw-Not-For-Strangers-71@db.hospital.example:5432/hospitaldb"
WEBHOOK = "https://hooks.slack.com/services/T000/B000/Webhook-Not-For-Strangers"


def test_a_server_with_the_auth_string_answers_nobody_without_it(tmp_path):
    with prefect_server(tmp_path / "prefect-home", auth_string=AUTH_STRING) as env:
        with client_of(env):
            SlackWebhook(url=WEBHOOK).save("hospitaldb-slack")
        status, body = anonymous_block_listing(env["PREFECT_API_URL"])
        assert status == 401, body
        assert "Webhook-Not-For-Strangers" not in body
        assert accepts_anonymous_requests(env["PREFECT_API_URL"]) is False
        with client_of(env) as client:  # with the auth string the same server answers
            assert [document.name for document in client.read_block_documents()] == ["hospitaldb-slack"]


@contextlib.contextmanager
def address_beyond_loopback() -> Iterator[str]:
    """An address of this machine that is not loopback: one end of a veth pair into a network
    namespace this test makes itself, so nothing outside the machine is involved."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"hdb{uuid.uuid4().hex[:6]}"
    address = f"10.231.{random.randrange(256)}.{random.randrange(64) * 4 + 1}"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}a", "type", "veth", "peer", "name", f"{name}b", "netns", name],
        ["ip", "addr", "add", f"{address}/30", "dev", f"{name}a"],
        ["ip", "link", "set", f"{name}a", "up"],
        ["ip", "-n", name, "link", "set", f"{name}b", "up"],
    ]
    try:
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode:
                pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
        yield address
    finally:
        subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_deploy_stores_no_secret_on_an_open_server_beyond_loopback_nor_over_plain_http_unless_accepted(
    tmp_path, smtp_server, webhook_server
):
    with address_beyond_loopback() as address:
        with prefect_server(tmp_path / "open", host=address) as env:
            refused = deploy(deploy_environment(env, DATABASE_URL, smtp_server, webhook_server))
            port = int(env["PREFECT_API_URL"].rsplit(":", 1)[1].split("/")[0])
            assert listening_beyond_loopback(port) == [address]
            with client_of(env) as client:
                stored = client.read_block_documents()
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert f"The Prefect server at {address} answers requests without credentials" in output
        assert "PREFECT_SERVER_API_AUTH_STRING" in output and "PREFECT_API_AUTH_STRING" in output
        assert "Not-For-Strangers" not in output
        assert stored == [], "nothing was stored"

        # Behind credentials, but over plain http to another host: the auth string and the secrets
        # would cross the network in clear. deploy.sh refuses; the explicit opt-out stores, warned.
        with prefect_server(tmp_path / "closed", host=address, auth_string=AUTH_STRING) as env:
            environment = deploy_environment(env, DATABASE_URL, smtp_server, webhook_server)
            plain = deploy(environment)
            with client_of(env) as client:
                stored = client.read_block_documents()
            accepted = subprocess.run(
                [sys.executable, "deployments/create_blocks.py"],
                cwd=PROJECT_ROOT,
                env={**environment, "HOSPITALDB_ALLOW_PLAIN_HTTP": "true"},
                capture_output=True,
                text=True,
            )
            status, _ = anonymous_block_listing(env["PREFECT_API_URL"])
        output = plain.stdout + plain.stderr
        assert plain.returncode != 0, output
        assert f"The Prefect server at {address} is reached over plain http" in output
        assert "Not-For-Strangers" not in output
        assert stored == [], "nothing was stored over plain http"
        assert accepted.returncode == 0, accepted.stdout + accepted.stderr
        assert accepted.stdout.count("saved") == 3
        assert "over plain http (HOSPITALDB_ALLOW_PLAIN_HTTP=true)" in accepted.stderr
        assert status == 401


def test_a_port_of_this_machine_listening_beyond_loopback_is_found():
    with address_beyond_loopback() as address, socket.create_server((address, 0)) as listener:
        assert listening_beyond_loopback(listener.getsockname()[1]) == [address]


def test_a_run_loads_no_block_from_a_server_beyond_loopback_over_plain_http_unless_accepted(
    tmp_path, demo_database
):
    """As `hospitaldb blocks` stores none there, a run loads none from there: the database block's
    password would cross the network in clear. The same opt-out lets it, warned."""
    with address_beyond_loopback() as address:
        with prefect_server(tmp_path / "closed", host=address, auth_string=AUTH_STRING) as env:
            with client_of(env):
                SqlAlchemyConnector(connection_info=demo_database).save("hospitaldb-over-http")
            environment = {key: value for key, value in env.items() if key != "HOSPITALDB_DATABASE_URL"}

            def refresh(**extra: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run(
                    [sys.executable, "flows/refresh.py", "--database-block", "hospitaldb-over-http"],
                    cwd=PROJECT_ROOT,
                    env={**environment, **extra},
                    capture_output=True,
                    text=True,
                )

            refused = refresh()
            runs_after_refused = scalar(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs")
            accepted = refresh(HOSPITALDB_ALLOW_PLAIN_HTTP="true")
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert (
        f"Block 'hospitaldb-over-http' was not loaded: the Prefect API at {address} is reached over plain http"
        in output
    )
    assert runs_after_refused == 0, "the run never reached the database"
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "come from " + address + " over plain http (HOSPITALDB_ALLOW_PLAIN_HTTP=true)" in (
        accepted.stdout + accepted.stderr
    )
    assert (
        scalar(demo_database, "SELECT count(*) FROM etl_audit.refresh_runs WHERE status = 'completed'") == 1
    )
