"""Text safety: what every log line, alert, artifact and audit row passes through.

Errors can carry secrets (a connection string, a webhook URL) and long SQL; one
place shortens and redacts them, so every path that shows an error to a person or
stores it applies the same rules.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

# scheme://user:password@host -> scheme://user:***@host (up to the last '@' before the path,
# so a password holding an unencoded '@' goes whole); key=value secrets, quoted or not.
_SECRET_PATTERNS = (
    (re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*):[^\s/]*@", re.IGNORECASE), r"\1:***@"),
    (re.compile(r"((?:password|passwd|pwd)\s*=\s*)('[^']*'|\"[^\"]*\"|\S+)", re.IGNORECASE), r"\1***"),
)
# A URL with something after its host: group 1 is its scheme and host.
_URL_WITH_PATH = re.compile(r"([a-z][a-z0-9+.-]*://[^\s/?#]+)[/?#]\S*", re.IGNORECASE)


def without_url_paths(text: str) -> str:
    """Every URL cut to its scheme and host: a notification service's URL may carry its key anywhere."""
    return _URL_WITH_PATH.sub(lambda url: f"{url[1]}/***", text)


def _without_webhook_path(url: re.Match[str]) -> str:
    """A webhook URL carries its secret in the path: keep the host, drop the rest."""
    scheme = url[1].split("://", 1)[0].lower()
    webhook = scheme.endswith(("http", "https")) and "hook" in url[0].lower()
    return f"{url[1]}/***" if webhook else url[0]


def shorten(text: str, limit: int) -> str:
    """Text on one line, cut to at most limit characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(text: str) -> str:
    """Remove passwords, connection-string credentials and webhook paths from text."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return _URL_WITH_PATH.sub(_without_webhook_path, text)


def safe(text: str, limit: int) -> str:
    """Redacted, then shortened: the form in which an error leaves the process."""
    return shorten(redact(text), limit)


def in_utc(moment: datetime, seconds: bool = False) -> str:
    """A time as people read it in alerts and logs, always in UTC, whatever the server's TimeZone.

    PostgreSQL returns timestamptz in the session's TimeZone; printing that with a 'UTC'
    label would be wrong by the offset (a database in America/New_York showed 12:00 UTC
    as 08:00).
    """
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M{':%S' if seconds else ''}} UTC"


def count_of(count: int, noun: str = "row") -> str:
    """'1 row', '3,000 rows'."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
