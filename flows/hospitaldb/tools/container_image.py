"""The HospitalDB refresh image, built with docker or podman (deployments/container/build_image.py).

    python3 dev.py image [--tag TAG] [--base IMAGE | --bootstrap-base [--mirror URL]] [--engine docker|podman]

1. Wheels: `pip wheel` of the runtime requirements, made once per requirements.txt and kept in
   ~/.cache/hospitaldb-refresh/wheels, and of this project. The image installs from them only.
2. A staged build context (build/image-context): the wheels, the project's wheel, the runtime
   requirements, the flow entry files, sql/ and the Containerfile. Nothing else of the checkout
   is sent to the engine, so a local .env or key file cannot end up in a layer. The requirements
   are installed in a layer of their own, which the engine reuses while they do not change.
3. `--bootstrap-base`: where no registry is reachable, a Debian bookworm base with Python
   is made with debootstrap (root, once; then reused) instead of pulling python:3.11-slim,
   from the Debian mirror apt on this machine is configured with (or `--mirror URL`).
4. `docker build` (or `podman build`) with the Containerfile in deployments/container/.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hospitaldb.paths import PROJECT_ROOT

ROOT = PROJECT_ROOT
CONTAINERFILE = ROOT / "deployments" / "container" / "Containerfile"
BUILD = ROOT / "build"
IMAGE_NAME = "localhost/hospitaldb-refresh"
DEFAULT_BASE = "python:3.11-slim-bookworm"
BOOTSTRAP_BASE = "localhost/hospitaldb-base:bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))
SUITE = "bookworm"


def _run(*command: str | Path) -> None:
    subprocess.run([str(part) for part in command], check=True)


def container_engine(preferred: str | None = None) -> str | None:
    """docker or podman, whichever answers (a docker CLI without its daemon does not)."""
    for engine in [preferred] if preferred else ["docker", "podman"]:
        if engine and shutil.which(engine):
            answered = subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0
            if answered:
                return engine
    return None


def _engine(preferred: str | None) -> str:
    engine = container_engine(preferred)
    if engine is None:
        raise SystemExit("no working docker or podman (`docker info` failed); see docs/deploy.md, Containers")
    return engine


def debian_mirror(sources: list[tuple[str, str]]) -> str | None:
    """The mirror apt is configured with for the Debian suite itself (not -security, not -updates).

    sources: (file name, text) of apt's sources, one-line (sources.list) or deb822 (*.sources).
    """
    for name, text in sources:
        if name.endswith(".sources"):
            for stanza in text.split("\n\n"):
                fields = dict(
                    line.split(":", 1)
                    for line in stanza.splitlines()
                    if ":" in line and not line.startswith("#")
                )
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and SUITE in suites:
                    return fields.get("URIs", "").split()[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                words = [word for word in words if not word.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    return words[1].rstrip("/")
    return None


def apt_sources() -> list[tuple[str, str]]:
    files = [
        APT_SOURCES[0],
        *sorted(APT_SOURCES[1].glob("*.list")),
        *sorted(APT_SOURCES[1].glob("*.sources")),
    ]
    return [(path.name, path.read_text()) for path in files if path.is_file()]


def requirements_for_older_pythons(wheels: Path, python: str = "3.11.0") -> list[str]:
    """Requirements of the wheels that apply on an older Python 3.11 and have no wheel yet."""
    import zipfile

    from packaging.markers import default_environment
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename

    environment = {**default_environment(), "python_full_version": python, "extra": ""}
    present = {canonicalize_name(parse_wheel_filename(wheel.name)[0]) for wheel in wheels.glob("*.whl")}
    missing: set[str] = set()
    for wheel in wheels.glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
            for line in archive.read(metadata).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    requirement = Requirement(line.removeprefix("Requires-Dist:").strip())
                    name = canonicalize_name(requirement.name)
                    if name not in present and (
                        requirement.marker is None or requirement.marker.evaluate(environment)
                    ):
                        requirement.marker = None
                        missing.add(str(requirement))
    return sorted(missing)


def default_tag() -> str:
    """The image tag is the package's version, as `hospitaldb --version` and prefect.yaml say it."""
    from hospitaldb import package_version

    return f"{IMAGE_NAME}:{package_version()}"


def wheelhouse(requirements: Path) -> Path:
    """The runtime requirements' wheels, made once per requirements.txt and kept in the user's cache.

    `pip wheel` of the whole runtime takes half a minute of CPU; the same pinned requirements
    give the same wheels, so a new checkout (CI's clean clone) reuses them.
    """
    digest = hashlib.sha256(requirements.read_bytes()).hexdigest()[:16]
    wheels = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hospitaldb-refresh" / "wheels"
    )
    wheels = wheels / f"{sys.version_info.major}.{sys.version_info.minor}-{digest}"
    if (wheels / ".complete").exists():
        return wheels
    shutil.rmtree(wheels, ignore_errors=True)
    quiet = ["--quiet", "--disable-pip-version-check"]
    pip = [sys.executable, "-m", "pip"]
    _run(*pip, "wheel", *quiet, "-w", wheels, "-r", requirements)
    # The image's Python is 3.11 but maybe an older patch release than this one, where some
    # requirements need more (async-timeout below 3.11.3): add those too.
    while missing := requirements_for_older_pythons(wheels):
        _run(*pip, "wheel", *quiet, "-w", wheels, *missing)
    (wheels / ".complete").touch()
    return wheels


def stage_context() -> Path:
    """The build context: only what the image needs; this project's wheel apart from the others'."""
    context = BUILD / "image-context"
    shutil.rmtree(context, ignore_errors=True)
    (context / "flows").mkdir(parents=True)
    shutil.copy2(ROOT / "requirements.txt", context / "requirements.txt")  # the runtime: no demo extra
    shutil.copytree(
        wheelhouse(context / "requirements.txt"),
        context / "wheels",
        ignore=shutil.ignore_patterns(".complete"),
    )
    # Its own folder: the layer of the requirements is then the engine's to reuse, build after build.
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--disable-pip-version-check",
        "-w",
        context / "project",
        "--no-deps",
        ROOT,
    )
    for entry in (ROOT / "flows").glob("*.py"):
        shutil.copy2(entry, context / "flows")
    shutil.copytree(ROOT / "sql", context / "sql")
    shutil.copy2(CONTAINERFILE, context / "Containerfile")
    return context


def image_exists(engine: str, image: str) -> bool:
    return subprocess.run([engine, "image", "inspect", image], capture_output=True).returncode == 0


def bootstrap_base(engine: str, mirror: str | None = None) -> str:
    """A Debian bookworm image with Python 3.11, made without a registry (needs root).

    From the mirror apt on this machine already uses, unless one is given.
    """
    if image_exists(engine, BOOTSTRAP_BASE):
        return BOOTSTRAP_BASE
    mirror = mirror or debian_mirror(apt_sources())
    if mirror is None:
        raise SystemExit(f"no Debian {SUITE} mirror in apt's sources (/etc/apt): pass --mirror URL")
    rootfs = BUILD / "base-rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    _run("debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", rootfs, mirror)
    for cache in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
        for path in (rootfs / cache).glob("*"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.name != "lock":
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    subprocess.run([engine, "import", "-", BOOTSTRAP_BASE], stdin=tar.stdout, check=True)
    if tar.wait() != 0:
        raise SystemExit("tar of the base root file system failed")
    shutil.rmtree(rootfs)
    return BOOTSTRAP_BASE


def build_image(
    tag: str, base: str | None, bootstrap: bool, engine: str | None = None, mirror: str | None = None
) -> str:
    engine = _engine(engine)
    if bootstrap:
        base = bootstrap_base(engine, mirror)
    context = stage_context()
    _run(
        engine, "build", "--build-arg", f"BASE_IMAGE={base or DEFAULT_BASE}",
        "-t", tag, "-f", context / "Containerfile", context,
    )  # fmt: skip
    return engine


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev.py image", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tag", default=default_tag(), help="default: the image name and this version")
    bases = parser.add_mutually_exclusive_group()
    bases.add_argument("--base", help=f"base image with Python 3.11 (default {DEFAULT_BASE})")
    bases.add_argument("--bootstrap-base", action="store_true", help="make a Debian base with debootstrap")
    parser.add_argument("--engine", choices=["docker", "podman"])
    parser.add_argument(
        "--mirror", help="Debian mirror for --bootstrap-base (default: the one apt uses here)"
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    engine = build_image(args.tag, args.base, args.bootstrap_base, args.engine, args.mirror)
    size = subprocess.run(
        [engine, "image", "inspect", "--format", "{{.Size}}", args.tag], capture_output=True, text=True
    ).stdout.strip()
    print(f"built {args.tag} with {engine} in {time.monotonic() - started:.0f} s; {int(size) / 1e6:.0f} MB")
    return 0
