#!/usr/bin/env python3
"""Project commands: one entry point for the README, .ci/run and GitHub Actions.

    python3 dev.py demo [ARGS]  run the refresh once (on the embedded demo database unless
                                configured otherwise); ARGS go to flows/refresh.py
    python3 dev.py test [ARGS]  run the test suite; ARGS go to pytest
    python3 dev.py lint         ruff check and format check
    python3 dev.py validate     every SQL file parses, the flow imports
    python3 dev.py image [ARGS] build the container image (docker or podman); ARGS go to
                                deployments/container/build_image.py (--help)
    python3 dev.py ci           lint, validate, the suite on embedded PostgreSQL, then the
                                suite again on the PostgreSQL server when one answers, then
                                the container test when podman or docker is there

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
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Read here, not through hospitaldb.settings: this runs before the package is installed.
VENV = Path(os.environ.get("HOSPITALDB_VENV") or ROOT / ".venv")
PYTHON = VENV / "bin" / "python"
SERVER_URL_ENV = "HOSPITALDB_TEST_DATABASE_URL"
LOCAL_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"


def ensure_environment(requirements: str) -> None:
    """Create .venv, install requirements and the package; again only when those files change."""
    files = [ROOT / requirements, ROOT / "requirements.txt", ROOT / "pyproject.toml"]
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PYTHON.exists():
        print(f"Creating a virtualenv in {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    print(f"Installing {requirements} (first run only, a minute or two) ...", flush=True)
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(ROOT / requirements)], check=True)
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


def ci(args: list[str]) -> int:
    for step in (lint, validate):
        if step([]):
            return 1
    # The container test builds an image and needs the server: it runs once, last.
    suite = [str(PYTHON), "-m", "pytest", "-m", "not container", *args]
    print("\n== Test suite on embedded PostgreSQL ==", flush=True)
    embedded = {key: value for key, value in os.environ.items() if key != SERVER_URL_ENV}
    ensure_environment("requirements-dev.txt")
    if subprocess.run(suite, cwd=ROOT, env=embedded).returncode:
        return 1
    server_url = os.environ.get(SERVER_URL_ENV)
    if not server_url and server_answers():
        server_url = LOCAL_SERVER_URL
    if not server_url:
        print("\nNo PostgreSQL server at 127.0.0.1:5432: the server and container runs are skipped.")
        return 0
    print("\n== Test suite on the PostgreSQL server ==", flush=True)
    if run(*suite, env={SERVER_URL_ENV: server_url}):
        return 1
    print("\n== Containers: image, Docker work pool, worker ==", flush=True)
    return run(str(PYTHON), "-m", "pytest", "-m", "container", *args, env={SERVER_URL_ENV: server_url})


COMMANDS = {"demo": demo, "test": test, "image": image, "lint": lint, "validate": validate, "ci": ci}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__)
        return 2
    return COMMANDS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
