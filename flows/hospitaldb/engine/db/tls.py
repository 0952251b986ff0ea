"""TLS to the database: decided by where libpq will really connect, and authenticated beyond loopback.

libpq's own default, `prefer`, falls back to plain text when the server, or anyone on the
path, says so; `require` encrypts but checks no certificate, so a man in the middle can
still ask for the password. Beyond loopback a session therefore defaults to `verify-full`
(the server proven by its certificate: a CA given in the URL, PGSSLROOTCERT, the service
file or ~/.postgresql/root.crt, else the system's CAs, `sslrootcert=system`) and
`channel_binding=require` (SCRAM bound to that TLS session: a password never goes to
whoever holds the connection). What the URL, the environment or a service file says wins;
a setting that leaves the session unauthenticated is warned on every run.

Where: every host and address libpq may use, from the URL (several hosts, `hostaddr`), a
service file (`service=` or PGSERVICE) and PGHOST/PGHOSTADDR. The session stays on this
machine only when every one of them is loopback by hospitaldb.api_channel.is_loopback: a
Unix socket, 127.0.0.0/8, ::1, `localhost`, or a `*.localhost` name that resolves there. A
name is never trusted for its spelling (`127.example.com` is a remote host).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hospitaldb.api_channel import is_loopback

UNAUTHENTICATED_MODES = frozenset({"disable", "allow", "prefer", "require"})
ENCRYPTED_MODES = frozenset({"require", "verify-ca", "verify-full"})
# Where libpq looks for a service's definition besides PGSERVICEFILE (or ~/.pg_service.conf):
# PGSYSCONFDIR, else the directory its build names; Debian's and the usual build's are tried.
SYSTEM_SERVICE_FILES = (Path("/etc/postgresql-common/pg_service.conf"), Path("/etc/pg_service.conf"))
# Settings a service may hold that decide where and how libpq connects.
TLS_KEYWORDS = ("host", "hostaddr", "sslmode", "sslrootcert", "channel_binding")


def connection_settings(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """What libpq will use for TLS and where: the keywords first, then a service file, then PG* variables.

    A service named but found nowhere yields `service_unknown`: where it points is unknown,
    so the session is treated as leaving the machine.
    """
    found = {key: str(kwargs[key]) for key in TLS_KEYWORDS if kwargs.get(key) not in (None, "")}
    service = kwargs.get("service") or os.environ.get("PGSERVICE")
    if service:
        definition = service_definition(str(service))
        if definition is None:
            found.setdefault("service_unknown", str(service))
        else:
            for key in TLS_KEYWORDS:
                if definition.get(key):
                    found.setdefault(key, definition[key])
    for key, variable in (
        ("host", "PGHOST"),
        ("hostaddr", "PGHOSTADDR"),
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("channel_binding", "PGCHANNELBINDING"),
    ):
        if os.environ.get(variable):
            found.setdefault(key, os.environ[variable])
    return found


def service_definition(name: str) -> dict[str, str] | None:
    """The keywords of service `name`, where libpq would read them; None when no file we know defines it."""
    user_file = Path(os.environ.get("PGSERVICEFILE") or Path.home() / ".pg_service.conf")
    system_dir = os.environ.get("PGSYSCONFDIR")
    system_files = (Path(system_dir) / "pg_service.conf",) if system_dir else SYSTEM_SERVICE_FILES
    for path in (user_file, *system_files):
        definition = _read_service(path, name)
        if definition is not None:
            return definition
    return None


def _read_service(path: Path, name: str) -> dict[str, str] | None:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    section: str | None = None
    definition: dict[str, str] | None = None
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            if definition is not None:
                return definition
            section = line[1:-1].strip()
            definition = {} if section == name else None
        elif definition is not None and "=" in line:
            key, _, value = line.partition("=")
            definition[key.strip()] = value.strip()
    return definition


def stays_on_this_machine(found: Mapping[str, str]) -> bool:
    """Every host and address libpq may use is loopback (no host at all: the local Unix socket)."""
    if "service_unknown" in found:
        return False
    places = [place for key in ("host", "hostaddr") for place in found.get(key, "").split(",") if place]
    return all(place.startswith(("/", "@")) or is_loopback(place) for place in places)


def tls_default(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """The TLS keywords to add beyond loopback: only those the URL, service or environment leave unset."""
    found = connection_settings(kwargs)
    if stays_on_this_machine(found):
        return {}
    added: dict[str, str] = {}
    if "sslmode" not in found:
        added["sslmode"] = "verify-full"
        if "sslrootcert" not in found and not (Path.home() / ".postgresql" / "root.crt").exists():
            added["sslrootcert"] = "system"
    # Binding needs TLS: a user who turned it off (disable, allow, prefer) is warned instead.
    if "channel_binding" not in found and {**found, **added}["sslmode"] in ENCRYPTED_MODES:
        added["channel_binding"] = "require"
    return added


def tls_warning(kwargs: Mapping[str, Any]) -> str | None:
    """Why sessions with these (final) keywords are not authenticated beyond loopback, or None."""
    found = connection_settings(kwargs)
    if stays_on_this_machine(found):
        return None
    mode = found.get("sslmode", "prefer")
    if mode in UNAUTHENTICATED_MODES:
        return (
            f"sslmode={mode} to a database beyond this machine: the server is not proven by its "
            "certificate, so whoever sits on the path can read the session"
            + ("" if mode == "require" else " or turn TLS off")
            + ". Give the server's CA (sslrootcert) and remove sslmode to get verify-full (docs/security.md)."
        )
    if found.get("channel_binding") in ("disable", "prefer") and mode != "verify-full":
        return (
            f"channel_binding={found['channel_binding']} with sslmode={mode}: the password may go to a "
            "server whose name the certificate does not prove (docs/security.md)."
        )
    return None
