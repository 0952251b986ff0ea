"""May this Prefect server be given secrets? Only behind credentials, unless it is on loopback alone.

A self-hosted Prefect server without an auth string hands every block's secrets to anyone
who can reach its API (`POST /api/block_documents/filter` with `include_secrets`): the
database password, the SMTP password, the Slack webhook. deployments/create_blocks.py
(and so deploy.sh) asks here before it stores any of them.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.request
from urllib.parse import urlsplit

HOW_TO_PROTECT = (
    "Start the server with PREFECT_SERVER_API_AUTH_STRING='USER:A-LONG-RANDOM-PASSWORD' (behind TLS, see "
    "docs/deploy.md), export PREFECT_API_AUTH_STRING with the same value here and for every worker, and "
    "run this again; or use Prefect Cloud (PREFECT_API_KEY)."
)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost; a name is not resolved: it may point anywhere tomorrow."""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def accepts_anonymous_requests(api_url: str, timeout: float = 10) -> bool:
    """True when the server answers a block listing without credentials."""
    request = urllib.request.Request(
        api_url.rstrip("/") + "/block_documents/filter",
        data=json.dumps({"limit": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return 200 <= response.status < 300
    except urllib.error.HTTPError as refused:
        if refused.code in (401, 403):
            return False
        raise


def listening_beyond_loopback(port: int) -> list[str]:
    """Addresses other than loopback that a server on this machine listens on at port."""
    import psutil

    return sorted(
        {
            connection.laddr.ip
            for connection in psutil.net_connections(kind="inet")
            if connection.status == psutil.CONN_LISTEN
            and connection.laddr.port == port
            and not is_loopback(connection.laddr.ip)
        }
    )


def refusal(host: str, anonymous: bool, also_listening_on: list[str]) -> str | None:
    """Why secrets must not go to this server, or None when they may. The decision, and only it."""
    if not anonymous:
        return None
    if is_loopback(host) and not also_listening_on:
        return None  # one machine: nobody else can reach it
    where = f"at {host}" + (
        f", listening on {', '.join(also_listening_on)} too," if also_listening_on else ""
    )
    return (
        f"The Prefect server {where} answers requests without credentials: anyone who can reach it "
        "could read the database password, the SMTP password and the webhook from its blocks. Nothing "
        "was stored. " + HOW_TO_PROTECT
    )


def check(api_url: str) -> str | None:
    """Ask the server (and this machine, for a server on loopback) and decide."""
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    anonymous = accepts_anonymous_requests(api_url)
    return refusal(
        host, anonymous, listening_beyond_loopback(port) if is_loopback(host) and anonymous else []
    )
