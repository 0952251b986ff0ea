"""The container path for real: the image, a Docker work pool, a Docker worker, podman.

Builds the image with `dev.py image`'s code, serves podman's Docker-compatible API on a
socket, deploys with `deploy.sh --image`, and runs the refresh in a container against a
PostgreSQL server over TCP (tcp_postgres_admin_url: the server at 127.0.0.1:5432 here; a
container reaches the host's loopback, while the embedded server listens on a Unix socket only).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hospitaldb.paths import PROJECT_ROOT
from hospitaldb.tools.container_image import build_image, container_engine
from hospitaldb_testing.db import add_source_rows, execute
from hospitaldb_testing.deployment import deployed_environment, start_run, wait_for_final_state
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.prefect_servers import prefect_cli, prefect_server, prefect_worker
from hospitaldb_testing.runs import TableLock, wait_for_blocked_refresh

pytestmark = [pytest.mark.e2e, pytest.mark.container]

TAG = "localhost/hospitaldb-refresh:test"
CONTAINERS_CONF = PROJECT_ROOT / "deployments" / "container" / "containers.conf"


@pytest.fixture(scope="module")
def postgres_admin_url(tcp_postgres_admin_url: str) -> str:
    """This module's databases live where a container reaches them: over TCP."""
    return tcp_postgres_admin_url


@pytest.fixture(scope="module")
def engine() -> str:
    os.environ.setdefault("CONTAINERS_CONF", str(CONTAINERS_CONF))
    found = container_engine("podman")
    if found is None:
        pytest.skip("podman is not installed or does not run here (see docs/deploy.md, Containers)")
    return found


@pytest.fixture(scope="module")
def image(engine: str) -> str:
    # No registry here: the base comes from debootstrap (as root) when it can.
    bootstrap = shutil.which("debootstrap") is not None and os.geteuid() == 0
    build_image(TAG, None, bootstrap, engine)
    return TAG


@pytest.fixture(scope="module")
def docker_host(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """podman's Docker-compatible API, which the Docker worker (docker SDK) talks to."""
    socket_path = tmp_path_factory.mktemp("podman") / "podman.sock"
    service = subprocess.Popen(
        [engine, "system", "service", "--time=0", f"unix://{socket_path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while not socket_path.exists():
        assert time.monotonic() < deadline and service.poll() is None, "podman system service did not start"
        time.sleep(0.2)
    yield f"unix://{socket_path}"
    service.terminate()
    service.wait(timeout=30)


def image_text(engine: str, image: str, tmp_path: Path) -> bytes:
    """Every byte a user of the image can read: history, configuration and file system."""
    history = subprocess.run(
        [engine, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    inspect = subprocess.run([engine, "image", "inspect", image], capture_output=True, check=True).stdout
    container = subprocess.run(
        [engine, "create", image], capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        archive = tmp_path / "rootfs.tar"
        subprocess.run([engine, "export", "-o", str(archive), container], check=True)
        files = []
        with tarfile.open(archive) as tar:
            for member in tar:
                if member.isfile():
                    files.append(tar.extractfile(member).read())
    finally:
        subprocess.run([engine, "rm", container], capture_output=True)
    return b"\n".join([history, inspect, *files])


def running_container_env(engine: str) -> list[str]:
    """The environment of the flow-run container running now."""
    listed = subprocess.run(
        [engine, "ps", "--format", "json", "--filter", f"ancestor={TAG}"], capture_output=True, text=True
    )
    (container,) = json.loads(listed.stdout or "[]")
    inspected = subprocess.run(
        [engine, "inspect", container["Id"]], capture_output=True, text=True, check=True
    )
    return json.loads(inspected.stdout)[0]["Config"]["Env"]


def test_the_image_runs_the_refresh_on_a_docker_work_pool_and_alerts_from_inside(
    engine, image, docker_host, least_privilege, demo_database, tmp_path, smtp_server, webhook_server
):
    with prefect_server(tmp_path / "prefect-home", schedules=False) as server_env:
        env = deployed_environment(
            server_env,
            least_privilege.refresher_url,
            smtp_server,
            webhook_server,
            deploy_args=("--image", image),
        )
        secrets = [
            least_privilege.password,
            env["HOSPITALDB_SMTP_PASSWORD"],
            webhook_server.url.rsplit("/", 1)[-1],
        ]
        worker_env = {**env, "DOCKER_HOST": docker_host}
        worker_log = tmp_path / "worker.log"
        add_source_rows(demo_database)
        with prefect_worker(worker_env, "hospitaldb-docker", worker_log):
            # A good run, held at step 2 long enough to read the running container's environment.
            blocker = TableLock(demo_database, "reporting.patient_summary")
            try:
                good = start_run(env, "hospitaldb-refresh/on-demand")
                wait_for_blocked_refresh(demo_database, timeout=300)
                container_env = running_container_env(engine)
            finally:
                blocker.release()
            good_state = wait_for_final_state(env, good, timeout=300)
            assert good_state.is_completed(), good_state.message + worker_log.read_text()[-3000:]
            assert_matches_source(demo_database)

            # A failing run inside the container still alerts: sources emptied, refused.
            execute(
                demo_database,
                "DELETE FROM staging.payments; DELETE FROM staging.billing; DELETE FROM staging.visits",
            )
            watched = prefect_cli(
                env, "deployment", "run", "hospitaldb-refresh/on-demand", "--watch", "--watch-timeout", "300"
            )
            assert "Failed" in watched.stdout, (
                watched.stdout + watched.stderr + worker_log.read_text()[-3000:]
            )
            deadline = time.monotonic() + 60
            while not smtp_server.received:
                assert time.monotonic() < deadline, "no alert email from the container"
                time.sleep(0.5)
        (mail,) = smtp_server.received
        assert (
            mail.message["Subject"]
            == "[HospitalDB] Refresh FAILED at check_sources: source incomplete: staging.visits"
        )
        assert [value for value in container_env if value.startswith("HOSPITALDB_ALERT_EMAILS=")] == [
            "HOSPITALDB_ALERT_EMAILS=oncall@hospital.example"
        ]
        leaked = [secret for secret in secrets if any(secret in value for value in container_env)]
        assert leaked == [], "a secret in the flow-run container's environment"
        everything = image_text(engine, image, tmp_path)
        leaked = [secret for secret in secrets if secret.encode() in everything]
        assert leaked == [], "a secret in the image's history, configuration or files"
