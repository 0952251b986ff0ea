"""Text safety: what every log line, alert, artifact and audit row passes through.

Errors can carry secrets (a connection string, a webhook URL) and long SQL; one
place shortens and redacts them, so every path that shows an error to a person or
stores it applies the same rules.
"""

from __future__ import annotations

import re

# scheme://user:password@host -> scheme://user:***@host; Slack webhook paths; key=value secrets.
_SECRET_PATTERNS = (
    (re.compile(r"([a-z][a-z0-9+.-]*://[^/\s:@]*):[^@\s]*@", re.IGNORECASE), r"\1:***@"),
    (re.compile(r"(hooks\.slack\.com/)\S+", re.IGNORECASE), r"\1***"),
    (re.compile(r"((?:password|passwd|pwd)\s*=\s*)\S+", re.IGNORECASE), r"\1***"),
)


def shorten(text: str, limit: int) -> str:
    """Text on one line, cut to at most limit characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def redact(text: str) -> str:
    """Remove passwords, connection-string credentials and webhook paths from text."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def safe(text: str, limit: int) -> str:
    """Redacted, then shortened: the form in which an error leaves the process."""
    return shorten(redact(text), limit)
