"""Issue 28: Kafka over TLS, for real. The embedded broker listens in plaintext on a port no
client is told about and advertises stunnel's TLS port, so every connection (bootstrap and
the ones that follow metadata) is TLS, with a client certificate: the topic admin, the event
producer, the worker's Faust consumer and producer (score records, DLQ), its librdkafka
shadow sink, and the readers. A plaintext client, a client that doesn't trust the CA and a
client without a certificate get nothing."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from leadscore.infra.topics import ensure_topics
from leadscore.model.registry import Registry
from leadscore.settings import Settings
from leadscore.tooling.embedded import Service, broker_binary, free_port, start_process
from leadscore.tooling.exceptions import ServiceStartError
from tests.fakes import save_worker_model

from .certs import TlsFiles, make_pki
from .helpers import (
    assert_features_match_replay,
    produce,
    read_to_end,
    recent_events,
    wait_caught_up,
)
from .tls import start_tls_terminator

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class TlsBroker:
    bootstrap: str
    """stunnel's TLS port: the only address clients are given or told."""
    pki: TlsFiles
    stunnel: Service


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    pki = make_pki(tmp_path / "pki")
    inner = free_port()
    outer = free_port()
    while outer == inner:
        outer = free_port()
    args = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{inner}",
        # Metadata answers name stunnel's port: no client ever learns the plaintext one.
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{outer}",
    ]
    try:
        broker = start_process("broker", args, tmp_path, f"127.0.0.1:{inner}", inner)
    except ServiceStartError as exc:
        pytest.fail(f"embedded broker: {exc}")
    try:
        stunnel = start_tls_terminator(tmp_path, accept=outer, connect=inner, pki=pki)
        try:
            yield TlsBroker(f"127.0.0.1:{outer}", pki, stunnel)
        finally:
            stunnel.stop()
    finally:
        broker.stop()


def _refused(config: dict) -> None:
    """A client with ``config`` gets no answer from the broker."""
    admin = AdminClient({**config, "socket.connection.setup.timeout.ms": 2000})
    with pytest.raises(KafkaException, match="Failed to get metadata"):
        admin.list_topics(timeout=2)


def test_every_kafka_client_connects_through_tls(
    tls_broker: TlsBroker, redis_url: str, tmp_path: Path, worker_factory
) -> None:
    uid = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap=tls_broker.bootstrap,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=tls_broker.pki.ca,
        kafka_ssl_certfile=tls_broker.pki.client_cert,
        kafka_ssl_keyfile=tls_broker.pki.client_key,
        redis_url=redis_url,
        topic_prefix=f"t{uid}.",
        app_id=f"leadscore-test-{uid}",
        model_dir=tmp_path / "models",
        web_port=free_port(),
        web_host="127.0.0.1",
    )
    ensure_topics(s)  # the admin client
    # A shadow model: the worker's librdkafka shadow sink sends a record per event too.
    save_worker_model(s.model_dir, "champion-v1")
    save_worker_model(s.model_dir, "shadow-v2", promote=False)
    Registry(s.model_dir).set_shadow("shadow-v2")
    worker = worker_factory(s)  # the worker's Faust (aiokafka) consumer and producer

    events = recent_events(40, 400, seed=28)
    produce(s, events)  # the event producer
    poison = Producer(s.kafka_client_config())
    for i in range(3):
        poison.produce(s.topic("web"), value=b"not json %d" % i, key=f"{uid}-p{i}".encode())
    assert poison.flush(30) == 0

    wait_caught_up(s, [worker], timeout=60)
    scored = Counter(r["event_id"] for r in read_to_end(s, "scores"))
    assert scored == Counter(e["event_id"] for e in events)
    shadow = read_to_end(s, "scores.shadow")
    assert {r["model_version"] for r in shadow} == {"shadow-v2"}
    assert Counter(r["event_id"] for r in shadow) == scored
    dlq = read_to_end(s, "dlq")  # sent by the worker's Faust producer
    assert [r["error_code"] for r in dlq] == ["not_json"] * 3
    assert_features_match_replay(worker, events)
    assert worker.proc.poll() is None, worker.log_tail()

    assert orjson.loads(worker.get("/ready")[1])["shadow_version"] == "shadow-v2"

    # stunnel saw the clients above: many TLS connections, each with our client certificate
    # (about 40 in all), and not one that wasn't TLS.
    log = tls_broker.stunnel.tail(100_000)
    assert log.count("Certificate accepted at depth=0: CN=leadscore") >= 10, log[-2000:]
    # (A plaintext client shows up as "wrong version number", as below.)
    assert "wrong version number" not in log, log[-2000:]
    # Nothing but TLS answers on that port, and each side checks the other's certificate.
    bootstrap = tls_broker.bootstrap
    _refused(Settings(kafka_bootstrap=bootstrap).kafka_client_config())
    assert "wrong version number" in tls_broker.stunnel.tail(100_000)
    # The system's trust store (no LEADSCORE_KAFKA_SSL_CAFILE) doesn't know our CA.
    _refused(
        Settings(kafka_bootstrap=bootstrap, kafka_security_protocol="SSL").kafka_client_config()
    )
    assert "unknown ca" in tls_broker.stunnel.tail(100_000)
    # Trusting the server is not enough: stunnel wants a certificate our CA signed.
    no_cert = Settings(
        kafka_bootstrap=bootstrap, kafka_security_protocol="SSL", kafka_ssl_cafile=tls_broker.pki.ca
    )
    _refused(no_cert.kafka_client_config())
    assert "peer did not return a certificate" in tls_broker.stunnel.tail(100_000)
