"""Kafka SASL and TLS from settings: one mapping to librdkafka's, aiokafka's and Faust's
settings, each checked by the library that takes it (no broker: SASL has never been
exercised against a real one here; TLS is, in tests/integration/test_kafka_tls.py); and
half-configured settings refuse to start with a message naming what to set."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.client import AIOKafkaClient
from confluent_kafka import Producer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from leadscore.cli import main
from leadscore.errors import ConfigError
from leadscore.settings import KafkaConnection, Settings, load_settings
from tests.integration.certs import TlsFiles, make_pki

MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PASSWORD = "test-only-secret"  # noqa: S105 - not a credential


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No LEADSCORE_KAFKA_* variable from the caller's environment."""
    import os

    for name in list(os.environ):
        if name.startswith("LEADSCORE_KAFKA_"):
            monkeypatch.delenv(name)
    return monkeypatch


def _sasl(mechanism: str, protocol: str = "SASL_SSL", **tls: object) -> Settings:
    return Settings(
        kafka_bootstrap="broker-1:9093,broker-2:9093",
        kafka_security_protocol=protocol,  # type: ignore[arg-type]
        kafka_sasl_mechanism=mechanism,  # type: ignore[arg-type]
        kafka_sasl_username="leadscore",
        kafka_sasl_password=PASSWORD,  # type: ignore[arg-type]
        **tls,  # type: ignore[arg-type]
    )


def _librdkafka_accepts(cfg: dict[str, Any]) -> None:
    # librdkafka checks property names and values, and loads the TLS files, when a client is
    # made; without bootstrap servers it never connects.
    Producer({**cfg, "bootstrap.servers": "", "log_level": 3})


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_ssl_maps_to_librdkafka(mechanism: str, pki: TlsFiles) -> None:
    s = _sasl(mechanism, kafka_ssl_cafile=pki.ca)
    cfg = s.kafka_client_config()
    assert cfg == {
        "bootstrap.servers": "broker-1:9093,broker-2:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": mechanism,
        "sasl.username": "leadscore",
        "sasl.password": PASSWORD,
        "ssl.ca.location": str(pki.ca),
        "log.connection.close": "false",
    }
    _librdkafka_accepts(cfg)
    group = s.kafka_group_config("g")
    assert group["sasl.mechanism"] == mechanism and group["group.id"] == "g"


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_maps_to_aiokafka(mechanism: str, pki: TlsFiles) -> None:
    plain = _sasl(mechanism, "SASL_PLAINTEXT").aiokafka_client_config()
    assert plain == {
        "bootstrap_servers": "broker-1:9093,broker-2:9093",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        # aiokafka takes SCRAM's credentials under these names too.
        "sasl_plain_username": "leadscore",
        "sasl_plain_password": PASSWORD,
    }
    tls = _sasl(mechanism, kafka_ssl_cafile=pki.ca).aiokafka_client_config()
    context = tls.pop("ssl_context")
    assert tls == {**plain, "security_protocol": "SASL_SSL"}
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

    async def make() -> None:
        # aiokafka's own checks: mechanism known, SASL_SSL with a context, and so on.
        for cfg in (plain, {**tls, "ssl_context": context}):
            client = AIOKafkaClient(**cfg)
            assert client._sasl_mechanism == mechanism
            await client.close()

    asyncio.run(make())


@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_maps_to_faust(mechanism: str, protocol: str, pki: TlsFiles) -> None:
    tls = {"kafka_ssl_cafile": pki.ca} if protocol == "SASL_SSL" else {}
    conn = KafkaConnection.of(_sasl(mechanism, protocol, **tls))
    credentials = conn.faust_credentials()
    assert isinstance(credentials, faust.SASLCredentials)
    # What Faust's aiokafka driver hands its consumer and producer.
    auth = dict(credentials_to_aiokafka_auth(credentials))
    context = auth.pop("ssl_context")
    assert auth == {
        "security_protocol": protocol,
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "leadscore",
        "sasl_plain_password": PASSWORD,
    }
    assert (context is None) == (protocol == "SASL_PLAINTEXT")


def test_tls_with_a_client_certificate_maps_to_every_library(pki: TlsFiles) -> None:
    s = Settings(
        kafka_bootstrap="b:9093",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=pki.ca,
        kafka_ssl_certfile=pki.client_cert,
        kafka_ssl_keyfile=pki.client_key,
    )
    cfg = s.kafka_client_config()
    assert cfg["security.protocol"] == "SSL"
    assert cfg["ssl.certificate.location"] == str(pki.client_cert)
    assert cfg["ssl.key.location"] == str(pki.client_key)
    assert not any(k.startswith("sasl.") for k in cfg)
    _librdkafka_accepts(cfg)
    auth = credentials_to_aiokafka_auth(KafkaConnection.of(s).faust_credentials())
    assert auth["security_protocol"] == "SSL"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    assert s.aiokafka_client_config()["security_protocol"] == "SSL"


def test_plaintext_gives_no_credentials() -> None:
    s = Settings(kafka_bootstrap="b:9092")
    assert KafkaConnection.of(s).faust_credentials() is None
    assert s.aiokafka_client_config() == {
        "bootstrap_servers": "b:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert s.kafka_client_config()["security.protocol"] == "PLAINTEXT"


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        # A client certificate without its key, and the other way round.
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_CERTFILE": "c.pem"},
            ["LEADSCORE_KAFKA_SSL_KEYFILE is not set"],
        ),
        (
            {"SECURITY_PROTOCOL": "SSL", "SSL_KEYFILE": "c.key"},
            ["LEADSCORE_KAFKA_SSL_CERTFILE is not set"],
        ),
        # TLS files with TLS off: TLS is never implied by a file.
        ({"SSL_CAFILE": "ca.pem"}, ["LEADSCORE_KAFKA_SECURITY_PROTOCOL is PLAINTEXT"]),
        (
            {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SSL_CAFILE": "ca.pem"},
            ["LEADSCORE_KAFKA_SECURITY_PROTOCOL is SASL_PLAINTEXT, not SSL or SASL_SSL"],
        ),
        # SASL without its mechanism, user or password.
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_MECHANISM": "PLAIN"},
            [
                "LEADSCORE_KAFKA_SASL_USERNAME is not set",
                "LEADSCORE_KAFKA_SASL_PASSWORD is not set",
            ],
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL", "SASL_USERNAME": "u", "SASL_PASSWORD": PASSWORD},
            ["LEADSCORE_KAFKA_SASL_MECHANISM is not set"],
        ),
        (
            {
                "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "SASL_MECHANISM": "SCRAM-SHA-256",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": "",
            },
            ["LEADSCORE_KAFKA_SASL_PASSWORD is not set"],
        ),
        # A user name without a mechanism (and without SASL on): every missing piece named.
        (
            {"SASL_USERNAME": "u"},
            [
                "LEADSCORE_KAFKA_SASL_MECHANISM is not set",
                "LEADSCORE_KAFKA_SASL_PASSWORD is not set",
                "LEADSCORE_KAFKA_SECURITY_PROTOCOL is PLAINTEXT, not SASL_SSL or SASL_PLAINTEXT",
            ],
        ),
        # Complete SASL credentials, but the protocol leaves SASL off: they'd go unused.
        (
            {
                "SECURITY_PROTOCOL": "SSL",
                "SASL_MECHANISM": "PLAIN",
                "SASL_USERNAME": "u",
                "SASL_PASSWORD": PASSWORD,
            },
            ["LEADSCORE_KAFKA_SECURITY_PROTOCOL is SSL, not SASL_SSL or SASL_PLAINTEXT"],
        ),
        (
            {"SECURITY_PROTOCOL": "SASL_SSL"},
            [
                "LEADSCORE_KAFKA_SASL_MECHANISM is not set",
                "LEADSCORE_KAFKA_SASL_USERNAME is not set",
                "LEADSCORE_KAFKA_SASL_PASSWORD is not set",
            ],
        ),
    ],
)
def test_half_configured_security_refuses_naming_the_setting(
    clean_env: pytest.MonkeyPatch, env: dict[str, str], missing: list[str]
) -> None:
    clean_env.setenv("LEADSCORE_KAFKA_BOOTSTRAP", "b:9093")
    for name, value in env.items():
        clean_env.setenv(f"LEADSCORE_KAFKA_{name}", value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    message = str(exc.value)
    assert message.startswith("settings: incomplete Kafka security settings: ")
    for text in missing:
        assert text in message
    assert message.count("LEADSCORE_KAFKA_") >= len(missing)
    assert PASSWORD not in message  # a SecretStr: never in a message


def test_complete_settings_start(clean_env: pytest.MonkeyPatch, pki: TlsFiles) -> None:
    complete = [
        {"SECURITY_PROTOCOL": "SSL"},  # the system's trust store
        {"SECURITY_PROTOCOL": "SSL", "SSL_CAFILE": str(pki.ca)},
        {
            "SECURITY_PROTOCOL": "SSL",
            "SSL_CERTFILE": str(pki.client_cert),
            "SSL_KEYFILE": str(pki.client_key),
        },
        {
            "SECURITY_PROTOCOL": "SASL_SSL",
            "SASL_MECHANISM": "SCRAM-SHA-512",
            "SASL_USERNAME": "u",
            "SASL_PASSWORD": PASSWORD,
            "SSL_CAFILE": str(pki.ca),
        },
        {
            "SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "SASL_MECHANISM": "PLAIN",
            "SASL_USERNAME": "u",
            "SASL_PASSWORD": PASSWORD,
        },
    ]
    for env in complete:
        with clean_env.context() as m:
            for name, value in env.items():
                m.setenv(f"LEADSCORE_KAFKA_{name}", value)
            assert load_settings().kafka_security_protocol == env["SECURITY_PROTOCOL"]


def test_the_worker_refuses_to_start_half_configured(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    clean_env.setenv("LEADSCORE_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    clean_env.setenv("LEADSCORE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    clean_env.setenv("LEADSCORE_KAFKA_SASL_MECHANISM", "SCRAM-SHA-256")
    clean_env.setenv("LEADSCORE_KAFKA_SASL_USERNAME", "leadscore")
    clean_env.setenv("LEADSCORE_MODEL_DIR", str(tmp_path))
    assert main(["worker"]) == 1
    err = capsys.readouterr().err
    assert "LEADSCORE_KAFKA_SASL_PASSWORD is not set" in err
