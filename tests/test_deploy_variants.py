"""Two deploy.sh side by side from one checkout (a paused deploy to one server, a Docker deploy to
another) each deploy their own variant of prefect.yaml: the file each writes is its own."""

from __future__ import annotations

import subprocess

import pytest

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb_testing.deployment import client_of, deploy_environment
from hospitaldb_testing.prefect_servers import prefect_server

pytestmark = pytest.mark.e2e


def test_two_deploys_at_once_each_deploy_their_own_variant(
    demo_database, tmp_path, smtp_server, webhook_server
):
    with (
        prefect_server(tmp_path / "paused", schedules=False) as paused_server,
        prefect_server(tmp_path / "docker", schedules=False) as docker_server,
    ):
        variants = {
            "paused": (
                deploy_environment(paused_server, demo_database, smtp_server, webhook_server),
                ["--paused"],
            ),
            "docker": (
                deploy_environment(docker_server, demo_database, smtp_server, webhook_server),
                ["--image", "localhost/hospitaldb-refresh:variant-test"],
            ),
        }
        running = {
            name: subprocess.Popen(
                ["bash", "deployments/deploy.sh", *args],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for name, (env, args) in variants.items()
        }
        for name, process in running.items():
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, f"deploy.sh ({name}):\n{output}"

        deployed = {}
        for name, (env, _) in variants.items():
            with client_of(env) as client:
                nightly = client.read_deployment_by_name("hospitaldb-refresh/nightly")
            deployed[name] = (nightly.work_pool_name, [schedule.active for schedule in nightly.schedules])
    assert deployed == {"paused": ("hospitaldb-pool", [False]), "docker": ("hospitaldb-docker", [True])}
