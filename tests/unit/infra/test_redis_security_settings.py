"""Redis credentials and TLS from settings: complete ones reach every connection; half-configured
ones refuse to start with a message naming the setting to set or unset."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from leadscore.errors import ConfigError
from leadscore.infra.redis import HiredisPackSSLConnection, connection_kwargs, redis_client
from leadscore.settings import Settings, load_settings


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        # TLS files given while TLS is off: the client would connect in plain text.
        ({"redis_url": "redis://h:6379/0", "redis_tls_cafile": "ca.pem"}, "LEADSCORE_REDIS_TLS "),
        (
            {
                "redis_url": "redis://h:6379/0",
                "redis_tls_certfile": "c.pem",
                "redis_tls_keyfile": "c.key",
            },
            "LEADSCORE_REDIS_TLS ",
        ),
        # A client certificate without its key, and the other way round.
        (
            {"redis_url": "rediss://h:6379/0", "redis_tls_certfile": "c.pem"},
            "LEADSCORE_REDIS_TLS_KEYFILE is not set",
        ),
        (
            {"redis_url": "rediss://h:6379/0", "redis_tls_keyfile": "c.key"},
            "LEADSCORE_REDIS_TLS_CERTFILE is not set",
        ),
        ({"redis_url": "unix:///run/redis.sock", "redis_tls": True}, "unix socket"),
        # An ACL user without a password, from the settings or from the URL.
        (
            {"redis_url": "redis://h:6379/0", "redis_username": "leadscore"},
            "LEADSCORE_REDIS_PASSWORD is not set",
        ),
        (
            {"redis_url": "redis://h:6379/0", "redis_username": "leadscore", "redis_password": ""},
            "LEADSCORE_REDIS_PASSWORD is not set",
        ),
        ({"redis_url": "redis://leadscore@h:6379/0"}, "LEADSCORE_REDIS_PASSWORD is not set"),
        # A credential in the URL and in a setting: redis-py would silently take the URL's.
        (
            {"redis_url": "redis://:pw@h:6379/0", "redis_password": "other"},
            "LEADSCORE_REDIS_URL carries a password and LEADSCORE_REDIS_PASSWORD",
        ),
        (
            {"redis_url": "redis://u:pw@h:6379/0", "redis_username": "v"},
            "LEADSCORE_REDIS_URL carries a user name and LEADSCORE_REDIS_USERNAME",
        ),
    ],
)
def test_half_configured_security_is_refused_naming_the_setting(
    settings: dict[str, Any], names: str
) -> None:
    with pytest.raises(ValidationError, match="incomplete Redis security settings") as info:
        Settings(**settings)
    assert names in str(info.value)


def test_the_cli_refuses_to_start_with_the_setting_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Read from the environment as every command does: a ConfigError (the CLI prints it and
    exits non-zero) that names the missing setting."""
    monkeypatch.setenv("LEADSCORE_REDIS_URL", "redis://h:6379/0")
    monkeypatch.setenv("LEADSCORE_REDIS_USERNAME", "leadscore")
    monkeypatch.delenv("LEADSCORE_REDIS_PASSWORD", raising=False)
    with pytest.raises(ConfigError, match="LEADSCORE_REDIS_PASSWORD is not set"):
        load_settings()
    monkeypatch.setenv("LEADSCORE_REDIS_PASSWORD", "secret")
    monkeypatch.setenv("LEADSCORE_REDIS_TLS_CAFILE", "ca.pem")
    with pytest.raises(ConfigError, match="LEADSCORE_REDIS_TLS is not set"):
        load_settings()
    monkeypatch.setenv("LEADSCORE_REDIS_TLS", "true")
    assert load_settings().redis_uses_tls


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(redis_url="redis://h/0", redis_username="u", redis_tls_certfile="c.pem")
    text = str(info.value)
    for name in ("LEADSCORE_REDIS_TLS ", "LEADSCORE_REDIS_TLS_KEYFILE", "LEADSCORE_REDIS_PASSWORD"):
        assert name in text


@pytest.mark.parametrize(
    "settings",
    [
        {"redis_url": "redis://h:6379/0"},
        {"redis_url": "redis://h:6379/0", "redis_password": "requirepass-only"},
        {"redis_url": "redis://leadscore:pw@h:6379/0"},
        {"redis_url": "rediss://h:6379/0", "redis_tls": True},
        {"redis_url": "rediss://h:6379/0", "redis_tls_cafile": "ca.pem"},
        {"redis_url": "redis://h:6379/0", "redis_tls": True, "redis_tls_cafile": "ca.pem"},
    ],
)
def test_complete_settings_are_accepted(settings: dict[str, Any]) -> None:
    Settings(**settings)


def test_credentials_and_tls_reach_the_connections() -> None:
    s = Settings(
        redis_url="redis://cache:6380/0",
        redis_tls=True,
        redis_username="leadscore",
        redis_password="secret",  # noqa: S106 - a test value
        redis_tls_cafile="ca.pem",
        redis_tls_certfile="client.pem",
        redis_tls_keyfile="client.key",
    )
    assert connection_kwargs(s) == {
        "username": "leadscore",
        "password": "secret",
        "ssl_ca_certs": "ca.pem",
        "ssl_certfile": "client.pem",
        "ssl_keyfile": "client.key",
    }
    client = redis_client(s)
    pool = client.connection_pool
    assert pool.connection_class is HiredisPackSSLConnection
    conn = pool.make_connection()
    assert (conn.username, conn.password) == ("leadscore", "secret")
    assert (conn.certfile, conn.keyfile, conn.ca_certs) == ("client.pem", "client.key", "ca.pem")


def test_a_rediss_url_is_tls_without_the_flag() -> None:
    s = Settings(redis_url="rediss://leadscore:pw@cache:6380/0", redis_tls_cafile="ca.pem")
    assert s.redis_uses_tls
    # Settings handed to a child process as environment variables carry REDIS_TLS=False:
    # the URL's TLS is kept, never dropped.
    assert Settings(redis_url="rediss://cache:6380/0", redis_tls=False).redis_uses_tls
    conn = redis_client(s).connection_pool.make_connection()
    assert isinstance(conn, HiredisPackSSLConnection)
    assert (conn.username, conn.password, conn.ca_certs) == ("leadscore", "pw", "ca.pem")
