"""A real `prefect server start` and `prefect worker start`, as subprocesses on loopback.

For the tests and the benchmark, which run the deployment path on real parts. Not shipped in the
runtime package: a worker never starts a server.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT

PREFECT = str(Path(sys.executable).with_name("prefect"))
# A Prefect database already at this Prefect's schema: a new server copies it instead of
# migrating an empty one (18 s of CPU each, on the machines CI runs on, against 9).
MIGRATED = PROJECT_ROOT / "build" / "test-cache" / f"prefect-{version('prefect')}.db"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _stop(process: subprocess.Popen, log: Path) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def migrated_database() -> Path:
    """MIGRATED, made once by a server of its own (under a lock: test processes run side by side)."""
    MIGRATED.parent.mkdir(parents=True, exist_ok=True)
    with MIGRATED.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not MIGRATED.exists():
            with tempfile.TemporaryDirectory(prefix="prefect-migrated-") as home:
                with prefect_server(Path(home), schedules=False, migrated=False):
                    pass
                made = Path(home) / "prefect.db"
                with contextlib.closing(sqlite3.connect(made)) as database:  # the WAL folded in
                    database.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                shutil.copy2(made, MIGRATED.with_suffix(".part"))
            MIGRATED.with_suffix(".part").rename(MIGRATED)
    return MIGRATED


@contextlib.contextmanager
def prefect_server(
    home: Path,
    database_url: str | None = None,
    *,
    host: str = "127.0.0.1",
    auth_string: str | None = None,
    schedules: bool = True,
    ui: bool = False,
    port: int | None = None,
    migrated: bool = True,
) -> Iterator[dict[str, str]]:
    """Start a Prefect server; yield the environment that CLI calls and workers need.

    With auth_string the server refuses any request without it (PREFECT_SERVER_API_AUTH_STRING),
    and the environment carries it for the clients (PREFECT_API_AUTH_STRING).
    With schedules=False the server's scheduler is off: deployments keep their schedules but
    no run is created from them, so a worker runs only the runs asked for (prefect.yaml's
    hourly freshness check would otherwise start, and alert, in the middle of a test).
    With ui=True it serves its UI too, talking to its own API (docs/screenshots.py).
    The same home and port start the same server again, with what it held (an outage).
    A new home on SQLite starts from a copy of an already migrated database (migrated=False:
    from an empty one).
    """
    port = port or free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": f"http://{host}:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "true" if ui else "false",
        "PREFECT_UI_API_URL": f"http://{host}:{port}/api",
    }
    server_env = dict(env)
    if database_url:
        server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    if not schedules:
        server_env["PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED"] = "false"
    if auth_string:
        server_env["PREFECT_SERVER_API_AUTH_STRING"] = auth_string
        env["PREFECT_API_AUTH_STRING"] = auth_string
    log = home / "server.log"
    home.mkdir(parents=True, exist_ok=True)
    if migrated and not database_url and not (home / "prefect.db").exists():
        shutil.copy2(migrated_database(), home / "prefect.db")
    with log.open("a") as output:
        process = subprocess.Popen(
            [PREFECT, "server", "start", "--host", host, "--port", str(port)],
            env=server_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://{host}:{port}/api/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield env
    finally:
        _stop(process, log)


@contextlib.contextmanager
def prefect_worker(env: dict[str, str], pool: str, log: Path) -> Iterator[subprocess.Popen]:
    with log.open("w") as output:
        process = subprocess.Popen(
            [PREFECT, "worker", "start", "--pool", pool],
            env={**env, "PREFECT_WORKER_QUERY_SECONDS": "2", "PREFECT_WORKER_PREFETCH_SECONDS": "2"},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        _stop(process, log)


def prefect_cli(env: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PREFECT, *args], env=env, capture_output=True, text=True, timeout=timeout)
