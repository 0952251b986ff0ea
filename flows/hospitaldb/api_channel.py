"""May this process load secrets from its Prefect API? Not from a server beyond loopback over plain http.

Loading a block (the database's, an alert channel's) fetches its secrets from PREFECT_API_URL:
the database password, the SMTP password, the webhook. Over plain http to another host they
cross the network in clear, with the API's auth string. `hospitaldb blocks` refuses to store
secrets there; a run refuses to load them from there, by the same rule and the same opt-out
(HOSPITALDB_ALLOW_PLAIN_HTTP=true, warned every time).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from hospitaldb import settings

ACCEPTED_IN_CLEAR = (
    "the secrets of block '{block}' come from {host} over plain http ({setting}=true): anyone on the "
    "path can read them and the API's auth string"
)


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; a `*.localhost` name only when every address it resolves to is loopback.

    Other names are not resolved: one may point anywhere tomorrow. A `.localhost` name is
    loopback by convention only (RFC 6761): a resolver or /etc/hosts may send it elsewhere.
    """
    host = host.strip("[]").rstrip(".").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host.endswith(".localhost"):
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:  # it resolves to nothing: not loopback by any evidence
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def plain_http_allowed() -> bool:
    return (settings.ALLOW_PLAIN_HTTP.read() or "").lower() in ("1", "true", "yes")


def in_clear(api_url: str | None) -> str | None:
    """The host secrets would cross the network from in clear, or None (https, loopback, no API: ephemeral)."""
    if not api_url:
        return None
    parts = urlsplit(api_url)
    host = parts.hostname or ""
    return host if parts.scheme == "http" and not is_loopback(host) else None


def refusal_to_load(block: str, api_url: str | None) -> str | None:
    """Why block's secrets must not be loaded from api_url, or None when they may."""
    host = in_clear(api_url)
    if host is None or plain_http_allowed():
        return None
    return (
        f"Block '{block}' was not loaded: the Prefect API at {host} is reached over plain http, so its "
        "secrets and the API's auth string would cross the network in clear. Put the server behind TLS "
        f"and set PREFECT_API_URL=https://... (docs/security.md), or, on a network you trust, set "
        f"{settings.ALLOW_PLAIN_HTTP}=true to accept it."
    )


def current_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def before_loading(block: str, refused: Callable[[str], Exception]) -> None:
    """Raise refused(why) when block's secrets must not come from this process's Prefect API; warn when accepted in clear."""
    api_url = current_api_url()
    why = refusal_to_load(block, api_url)
    if why:
        raise refused(why)
    host = in_clear(api_url)
    if host:
        run_logger().warning(
            ACCEPTED_IN_CLEAR.format(block=block, host=host, setting=settings.ALLOW_PLAIN_HTTP)
        )


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The flow or task run's logger (its lines reach the run's logs), else the `hospitaldb` logger."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:  # a hook or a command, outside a run
        return logging.getLogger("hospitaldb")
