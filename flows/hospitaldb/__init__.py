"""HospitalDB refresh: the flows (refresh, freshness) over an engine, a record, local commands and offline tools."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

DISTRIBUTION = "hospitaldb-refresh"


def package_version() -> str:
    """The installed version: the one `hospitaldb --version`, the deployments and the image tag carry."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed: pip install -e .)"
