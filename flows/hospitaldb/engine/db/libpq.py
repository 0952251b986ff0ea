"""What the refresh asks of libpq for every session: TCP keepalives, TLS beyond loopback (engine.db.tls), several hosts.

Each is a default that the database URL (or a block's connect_args) may override.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL

from hospitaldb.engine.db.tls import tls_default

# TCP settings for every session, each overridable in the URL or the block's connect_args.
# An idle session (the lock's, the audit's) behind a NAT or load balancer that drops it
# silently is noticed in about a minute instead of libpq's two hours of default keepalives,
# and a write to a dead peer fails after tcp_user_timeout instead of minutes of retransmits.
TCP_DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def libpq_keywords(url: URL, connect_args: Mapping[str, Any]) -> dict[str, Any]:
    """libpq's keywords for a URL: its own, the block's connect_args, then our defaults where they say nothing."""
    kwargs: dict[str, Any] = url.translate_connect_args(username="user", database="dbname")
    for key, value in url.query.items():
        kwargs[key] = value[-1] if isinstance(value, tuple) else value
    hosts = url.query.get("host")
    if isinstance(hosts, tuple):  # several hosts (a failover pair): libpq tries them in order
        pairs = [host.rsplit(":", 1) if ":" in host else (host, "") for host in hosts]
        kwargs["host"] = ",".join(host for host, _ in pairs)
        kwargs["port"] = ",".join(port or str(url.port or 5432) for _, port in pairs)
    kwargs.update(connect_args)
    return {**TCP_DEFAULTS, **tls_default(kwargs), **kwargs}


def hosts_as_query(url: str) -> str:
    """libpq's multi-host URL (postgresql://u@h1:5432,h2:5432/db), as SQLAlchemy reads it (?host=h1:5432&host=...)."""
    scheme, separator, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    credentials, at, hostlist = authority.rpartition("@")
    if not separator or "," not in hostlist:
        return url
    query = "&".join(f"host={host}" for host in hostlist.split(",") if host)
    path, _, parameters = path.partition("?")
    joined = f"{query}&{parameters}" if parameters else query
    return f"{scheme}://{credentials}{at}{slash}{path}?{joined}"
