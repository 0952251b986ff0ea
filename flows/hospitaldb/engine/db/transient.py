"""Which database errors are worth a retry: those that describe the moment, not the SQL.

A retry of the same SQL helps when the connection dropped, the server restarts, a lock
or a deadlock got in the way; it only delays the alert for anything else (a wrong
password, a missing table, a failed check).
"""

from __future__ import annotations

import psycopg2

# SQLSTATEs that describe the moment, not the SQL: connection exceptions (08…),
# serialization failure, deadlock, lock timeout, server shutting down or
# starting, too many connections, and a read-only server (25006: a standby, or a
# primary demoted by a failover; with a multi-host URL the retry finds the new primary).
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "57P01", "57P02", "57P03", "53300", "25006"})

# Connection failures without a SQLSTATE that a retry may well fix: the server or the
# network is down, restarting or busy for the moment. Anything else (a disabled login, a
# wrong password, "SSL required", a certificate, a pooler's "unsupported startup parameter")
# fails at once, with libpq's message: retrying it only delays the alert.
TRANSIENT_CONNECT_MESSAGES = (
    "connection refused",
    "connection reset",
    "connection timed out",
    "timeout expired",
    "server closed the connection unexpectedly",
    "terminating connection",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "too many connections",
    "remaining connection slots are reserved",
    "could not receive data from server",
    "could not send data to server",
    "no route to host",
    "network is unreachable",
    "temporary failure in name resolution",
    "no such file or directory",  # a Unix socket that is gone while the server restarts
    "ssl syscall error: eof detected",
    # target_session_attrs=read-write found no primary among the hosts: mid-failover.
    "session is read-only",
    "server is in hot standby mode",
    "could not make a writable connection",
)


def is_transient(error: BaseException) -> bool:
    """True when a retry of the same SQL may well succeed."""
    if not isinstance(error, psycopg2.Error):
        return False
    code = error.pgcode
    if code:
        return code in TRANSIENT_SQLSTATES or code.startswith("08")
    # No SQLSTATE: the connection failed or dropped before the server could say why.
    if isinstance(error, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        message = str(error).lower()
        return any(text in message for text in TRANSIENT_CONNECT_MESSAGES)
    return False
