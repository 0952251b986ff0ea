"""Secrets: redacted from every text that leaves the process, and given only to a server that asks for credentials."""

from __future__ import annotations

import pytest

from hospitaldb.api_channel import refusal_to_load
from hospitaldb.text import redact
from hospitaldb.tools.server_guard import is_loopback, refusal

LEAKY_URL = "postgresql://hosp:Winter@2024secret@db.hospital.example:5432/hospitaldb"


@pytest.mark.parametrize(
    ("leak", "secret"),
    [
        (LEAKY_URL, "2024secret"),
        ("could not connect: password='with space' host=db", "space"),
        ('dsn: password="double quoted" user=x', "quoted"),
        ("POST https://outlook.office.com/webhook/abc-123/IncomingWebhook/def/ghi failed", "abc-123"),
        ("POST https://discord.com/api/webhooks/4242/tok-en failed", "tok-en"),
        ("https://hooks.slack.com/services/T000/B000/XXXX returned 500", "XXXX"),
    ],
)
def test_redact_covers_every_secret_form(leak, secret):
    assert secret not in redact(leak)


def test_redact_removes_credentials_and_webhook_paths():
    text = redact(
        "postgresql://refresher:hunter2@db:5432/h failed; https://hooks.slack.com/services/T/B/abc; password=xyz"
    )
    assert "hunter2" not in text and "abc" not in text and "xyz" not in text
    assert "postgresql://refresher:***@db:5432/h" in text


@pytest.mark.parametrize(
    ("host", "anonymous", "also_listening_on", "refused"),
    [
        ("127.0.0.1", True, [], False),
        ("localhost", True, [], False),
        ("::1", True, [], False),
        ("127.0.0.1", True, ["0.0.0.0"], True),  # the URL says loopback, the server listens everywhere
        ("10.20.30.40", True, [], True),
        ("prefect.hospital.example", True, [], True),  # a name is not trusted to stay loopback
        ("10.20.30.40", False, [], False),
        ("prefect.hospital.example", False, [], False),
    ],
)
def test_secrets_go_only_behind_credentials_or_to_loopback_alone(host, anonymous, also_listening_on, refused):
    why = refusal(host, anonymous, also_listening_on)
    assert (why is not None) == refused
    if why:
        assert "without credentials" in why and "PREFECT_SERVER_API_AUTH_STRING" in why
        assert all(address in why for address in also_listening_on)


def test_loopback_is_an_address_not_a_name():
    assert [
        is_loopback(host) for host in ("127.0.0.2", "::1", "localhost", "0.0.0.0", "10.0.0.1", "loopback")
    ] == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("host", "scheme", "allowed", "refused"),
    [
        (
            "10.20.30.40",
            "http",
            False,
            True,
        ),  # behind credentials, but the string crosses the network in clear
        ("prefect.hospital.example", "http", False, True),
        ("10.20.30.40", "http", True, False),  # the explicit opt-out (warned about by `hospitaldb blocks`)
        ("prefect.hospital.example", "https", False, False),
        ("127.0.0.1", "http", False, False),  # one machine: nothing crosses a network
    ],
)
def test_beyond_loopback_secrets_go_only_over_https_unless_plain_http_is_accepted(
    host, scheme, allowed, refused
):
    why = refusal(host, False, [], scheme=scheme, plain_http_allowed=allowed)
    assert (why is not None) == refused
    if why:
        assert "plain http" in why and "HOSPITALDB_ALLOW_PLAIN_HTTP" in why and "https://" in why


def test_a_localhost_name_is_loopback_only_when_it_resolves_there():
    # Nothing resolves this name here: RFC 6761 says it should be loopback, but nothing shows it is.
    assert is_loopback("db.localhost") is False
    assert is_loopback("localhost") is True


@pytest.mark.parametrize(
    ("api_url", "allowed", "refused"),
    [
        ("http://prefect.hospital.example:4200/api", "", True),
        ("http://10.0.0.5:4200/api", "", True),
        ("http://10.0.0.5:4200/api", "true", False),
        ("https://prefect.hospital.example/api", "", False),
        ("http://127.0.0.1:4200/api", "", False),
        ("http://[::1]:4200/api", "", False),
        (None, "", False),  # no API: an ephemeral server in this process
    ],
)
def test_a_run_loads_no_block_over_plain_http_beyond_loopback_unless_accepted(
    api_url, allowed, refused, monkeypatch
):
    monkeypatch.setenv("HOSPITALDB_ALLOW_PLAIN_HTTP", allowed)
    why = refusal_to_load("hospitaldb-postgres", api_url)
    assert (why is not None) is refused
    if why:
        assert "Block 'hospitaldb-postgres' was not loaded" in why
        assert "HOSPITALDB_ALLOW_PLAIN_HTTP=true" in why and "https://" in why
