"""TLS to PostgreSQL: a server beyond loopback gets an encrypted session, verified where a CA is given.

Real servers on loopback (tests/hospitaldb_testing/local_postgres.py), reached under a name that is not a
loopback one (`db.hospital.test`, with libpq's hostaddr=127.0.0.1), so the rule for a remote
database applies; the CA and the server's certificate are made by the test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from hospitaldb.engine.db.database import DATABASE_URL_ENV, target_from_url
from hospitaldb.local.demo import build_demo_database
from hospitaldb_testing.db import private_temp_dir, scalar
from hospitaldb_testing.expected import assert_matches_source
from hospitaldb_testing.local_postgres import TlsServer, certificates, tls_binaries
from hospitaldb_testing.runs import run_flow

# Its own servers, whatever PostgreSQL the rest of the suite uses.


@pytest.fixture
def binaries() -> Path:
    found = tls_binaries()
    if found is None:
        pytest.skip("no PostgreSQL built with TLS here (the embedded one is not): apt-get install postgresql")
    return found


def _served(binaries: Path, monkeypatch, **options) -> Iterator[TlsServer]:
    server = TlsServer(private_temp_dir("hospitaldb-tls-") / "servers", binaries, **options)
    try:
        server.start()
        monkeypatch.setenv("PGPASSFILE", str(server.passfile))
        yield server
    finally:
        server.stop()


@pytest.fixture
def tls_server(binaries, monkeypatch) -> Iterator[TlsServer]:
    """A server that logs sessions in by SCRAM, as the docs set it up: channel binding is possible."""
    yield from _served(binaries, monkeypatch, auth="scram-sha-256")


@pytest.fixture
def clear_password_server(binaries, monkeypatch) -> Iterator[TlsServer]:
    """A server with a certificate a CA proves, that asks for the password in clear (pg_hba `password`)."""
    yield from _served(binaries, monkeypatch, auth="password")


@pytest.fixture
def no_known_ca(monkeypatch, tmp_path):
    """No CA but the system's: no ~/.postgresql/root.crt, no PGSSLROOTCERT."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("PGSSLROOTCERT", raising=False)


@pytest.fixture
def plain_server(binaries) -> Iterator[TlsServer]:
    server = TlsServer(private_temp_dir("hospitaldb-plain-") / "servers", binaries, tls=False)
    try:
        yield server.start()
    finally:
        server.stop()


def test_a_named_server_with_a_ca_is_refreshed_over_verified_tls(tls_server, prefect, monkeypatch):
    url = tls_server.named_url(sslrootcert=str(tls_server.ca_file))
    kwargs = target_from_url(url, "test")._connection_kwargs
    assert (kwargs["sslmode"], kwargs["channel_binding"]) == ("verify-full", "require")
    build_demo_database(
        tls_server.named_url(sslrootcert=str(tls_server.ca_file), sslmode="verify-full"), visits=2000
    )
    monkeypatch.setenv(DATABASE_URL_ENV, url)

    assert run_flow().is_completed()

    assert_matches_source(url)
    sessions = scalar(url, "SELECT count(*) FROM pg_stat_ssl WHERE ssl AND pid = pg_backend_pid()")
    assert sessions == 1, "this very session is encrypted"
    # A certificate from another CA is refused: verify-full proves the server.
    other_ca = tls_server.root.parent / "other-ca.pem"
    other_ca.write_bytes(certificates(tls_server.name)[0])
    with pytest.raises(psycopg2.OperationalError, match=r"SSL error|certificate verify failed"):
        target_from_url(tls_server.named_url(sslrootcert=str(other_ca)), "test").connect()


def test_a_plain_connection_to_a_named_server_is_refused_unless_the_url_says_so(plain_server):
    with pytest.raises(psycopg2.OperationalError, match="SSL"):
        target_from_url(plain_server.named_url(), "test").connect()
    # The URL may say otherwise, deliberately.
    connection = target_from_url(plain_server.named_url(sslmode="disable"), "test").connect()
    connection.close()


def test_without_a_ca_the_server_must_be_proven_by_the_systems_cas(tls_server, no_known_ca):
    """The attack: a server (or whoever stands in for it) with a certificate nobody trusts.

    Before, the default without a CA was `require`, which checks no certificate: this connected.
    """
    target = target_from_url(tls_server.named_url(), "test")
    assert target._connection_kwargs["sslrootcert"] == "system"
    with pytest.raises(psycopg2.OperationalError, match=r"certificate verify failed|SSL error"):
        target.connect().close()
    # Said deliberately, it connects, and every run warns.
    target = target_from_url(tls_server.named_url(sslmode="require"), "test")
    target.connect().close()
    assert "sslmode=require" in target.tls_warning


def test_a_server_asking_for_the_password_in_clear_never_gets_it(clear_password_server):
    """The attack: a man in the middle with a certificate that passes, asking for the password in clear.

    channel_binding=require makes libpq refuse any login but SCRAM bound to this TLS session.
    """
    url = clear_password_server.named_url(sslrootcert=str(clear_password_server.ca_file))
    with pytest.raises(psycopg2.OperationalError, match="channel binding"):
        target_from_url(url, "test").connect().close()
    # The same server, the user having turned channel binding off: the password is sent, and taken.
    target_from_url(
        clear_password_server.named_url(
            sslrootcert=str(clear_password_server.ca_file), channel_binding="disable"
        ),
        "test",
    ).connect().close()
