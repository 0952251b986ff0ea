"""May this Prefect server be given secrets? Only behind credentials, unless it is on loopback alone;
and beyond loopback only over https.

A self-hosted Prefect server without an auth string hands every block's secrets to anyone
who can reach its API (`POST /api/block_documents/filter` with `include_secrets`): the
database password, the SMTP password, the Slack webhook. Behind an auth string but over
plain http to another host, the string and the secrets cross the network in clear.
`hospitaldb blocks` (and so deploy.sh) asks here before it stores any of them. What it
cannot see: a loopback port that is a tunnel (`ssh -L`, `kubectl port-forward`) to a
server elsewhere looks like a local server; it says so.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from hospitaldb import settings
from hospitaldb.api_channel import is_loopback, plain_http_allowed

HOW_TO_PROTECT = (
    "Start the server with PREFECT_SERVER_API_AUTH_STRING='USER:A-LONG-RANDOM-PASSWORD' (behind TLS, see "
    "docs/deploy.md), export PREFECT_API_AUTH_STRING with the same value here and for every worker, and "
    "run this again; or use Prefect Cloud (PREFECT_API_KEY)."
)


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


def refusal(
    host: str,
    anonymous: bool,
    also_listening_on: list[str],
    *,
    scheme: str = "https",
    plain_http_allowed: bool = False,
) -> str | None:
    """Why secrets must not go to this server, or None when they may. The decision, and only it."""
    if not anonymous or (is_loopback(host) and not also_listening_on):
        if scheme == "http" and not is_loopback(host) and not plain_http_allowed:
            return (
                f"The Prefect server at {host} is reached over plain http: its auth string and every "
                "block's secrets would cross the network in clear. Nothing was stored. Put the server "
                "behind TLS and use PREFECT_API_URL=https://... (docs/security.md), or, on a network you "
                f"trust, set {settings.ALLOW_PLAIN_HTTP}=true to accept it."
            )
        return None  # behind credentials (and TLS, or a network you trust), or one machine alone
    where = f"at {host}" + (
        f", listening on {', '.join(also_listening_on)} too," if also_listening_on else ""
    )
    return (
        f"The Prefect server {where} answers requests without credentials: anyone who can reach it "
        "could read the database password, the SMTP password and the webhook from its blocks. Nothing "
        "was stored. " + HOW_TO_PROTECT
    )


@dataclass(frozen=True)
class Verdict:
    refusal: str | None  # why nothing may be stored; None: it may
    warnings: list[str] = field(default_factory=list)  # what the guard accepted but cannot vouch for


def check(api_url: str) -> Verdict:
    """Ask the server (and this machine, for a server on loopback) and decide."""
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    anonymous = accepts_anonymous_requests(api_url)
    why = refusal(
        host,
        anonymous,
        listening_beyond_loopback(port) if is_loopback(host) and anonymous else [],
        scheme=parts.scheme,
        plain_http_allowed=plain_http_allowed(),
    )
    warnings = []
    if why is None and parts.scheme == "http" and not is_loopback(host):
        warnings.append(
            f"the secrets go to {host} over plain http ({settings.ALLOW_PLAIN_HTTP}=true): anyone on "
            "the path can read them and the auth string"
        )
    if why is None and anonymous:
        warnings.append(
            f"{host}:{port} answers without credentials and is accepted because it is loopback; if it "
            "is a tunnel (ssh -L, kubectl port-forward) to a server elsewhere, that server is open to "
            "its own network: the guard cannot see through a tunnel"
        )
    return Verdict(why, warnings)
