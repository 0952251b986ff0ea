"""TLS to the database is decided by where libpq will really connect (engine.db.tls), not by the URL's host alone.

These are the code's decisions; tests/test_tls.py connects to real servers with what they decide.
"""

from __future__ import annotations

import pytest

from hospitaldb.engine.db.database import target_from_url
from hospitaldb.engine.db.tls import tls_default, tls_warning

AUTHENTICATED = {"sslmode": "verify-full", "sslrootcert": "system", "channel_binding": "require"}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch, tmp_path):
    """No PG* variable, and a home without ~/.postgresql/root.crt or ~/.pg_service.conf."""
    for variable in (
        "PGHOST",
        "PGHOSTADDR",
        "PGSERVICE",
        "PGSERVICEFILE",
        "PGSYSCONFDIR",
        "PGSSLMODE",
        "PGSSLROOTCERT",
        "PGCHANNELBINDING",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "no-system-services"))


@pytest.mark.parametrize(
    "keywords",
    [
        {"host": "db.hospital.example"},
        {"host": "127.hospital.example"},  # a name, whatever it starts with
        {"hostaddr": "10.1.2.3"},  # no host at all, but an address beyond this machine
        {"host": "localhost,db.hospital.example"},  # a failover pair: one host is remote
        {"host": "db.hospital.test", "hostaddr": "127.0.0.1"},  # a name the certificate must prove
        {"host": "localhost", "hostaddr": "10.1.2.3"},  # libpq connects to hostaddr
        {"service": "nowhere"},  # a service no file we know defines
    ],
)
def test_beyond_loopback_the_server_is_authenticated_by_default(keywords):
    assert tls_default(keywords) == AUTHENTICATED
    assert tls_warning({**keywords, **tls_default(keywords)}) is None


@pytest.mark.parametrize(
    "keywords",
    [
        {},
        {"host": "localhost"},
        {"host": "127.0.0.1,::1"},
        {"host": "/var/run/postgresql"},
        {"hostaddr": "127.0.0.1"},
    ],
)
def test_on_this_machine_nothing_is_added(keywords):
    assert tls_default(keywords) == {}
    assert tls_warning(keywords) is None


def test_a_service_file_says_where_the_session_goes(monkeypatch, tmp_path):
    services = tmp_path / "services.conf"
    services.write_text(
        "# the team's services\n[local]\nhost=localhost\n\n[warehouse]\nhost = db.hospital.example\nport=5432\n"
        "[warehouse-ca]\nhost=db.hospital.example\nsslmode=verify-ca\nsslrootcert=/etc/hospital/ca.pem\n"
    )
    monkeypatch.setenv("PGSERVICEFILE", str(services))

    assert tls_default({"service": "local"}) == {}
    assert tls_default({"service": "warehouse"}) == AUTHENTICATED
    # What the service says is kept: only what it leaves unset is added.
    assert tls_default({"service": "warehouse-ca"}) == {"channel_binding": "require"}
    monkeypatch.setenv("PGSERVICE", "warehouse")
    assert tls_default({}) == AUTHENTICATED
    # A system service file, where libpq also looks.
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "none.conf"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pg_service.conf").write_text("[warehouse]\nhost=localhost\n")
    monkeypatch.setenv("PGSYSCONFDIR", str(tmp_path / "etc"))
    assert tls_default({}) == {}


def test_the_environment_counts_like_the_url(monkeypatch):
    monkeypatch.setenv("PGHOST", "db.hospital.example")
    assert tls_default({}) == AUTHENTICATED
    monkeypatch.setenv("PGSSLROOTCERT", "/etc/hospital/ca.pem")
    assert tls_default({}) == {"sslmode": "verify-full", "channel_binding": "require"}


def test_a_given_ca_replaces_the_system_ones(tmp_path):
    assert tls_default({"host": "db.hospital.example", "sslrootcert": "/etc/ca.pem"}) == {
        "sslmode": "verify-full",
        "channel_binding": "require",
    }
    (tmp_path / ".postgresql").mkdir()
    (tmp_path / ".postgresql" / "root.crt").write_text("a CA")
    assert tls_default({"host": "db.hospital.example"}) == {
        "sslmode": "verify-full",
        "channel_binding": "require",
    }


@pytest.mark.parametrize("mode", ["require", "prefer", "disable", "allow"])
def test_an_unauthenticated_mode_is_kept_when_the_user_says_so_and_warned(mode):
    target = target_from_url(f"postgresql://refresher@db.hospital.example/hospital?sslmode={mode}", "test")
    assert target._connection_kwargs["sslmode"] == mode
    assert f"sslmode={mode}" in target.tls_warning
    assert "sslrootcert" in target.tls_warning, "the warning says what to do"


def test_a_loopback_url_gets_no_tls_default_and_no_warning():
    target = target_from_url("postgresql://refresher@127.0.0.1:5432/hospital", "test")
    assert "sslmode" not in target._connection_kwargs
    assert target.tls_warning is None


def test_channel_binding_is_added_wherever_the_session_is_encrypted():
    remote = {"host": "db.hospital.example"}
    assert tls_default({**remote, "sslmode": "require"}) == {"channel_binding": "require"}
    assert tls_default({**remote, "sslmode": "disable"}) == {}
    assert tls_default({**remote, "channel_binding": "disable"}) == {
        "sslmode": "verify-full",
        "sslrootcert": "system",
    }
