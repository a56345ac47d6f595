"""Settings: one frozen object, read once from ``LEADSCORE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from leadscore.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of the worker and CLI. Credentials are ``SecretStr`` and never logged."""

    model_config = SettingsConfigDict(env_prefix="LEADSCORE_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset means the demo starts its own broker",
    )
    redis_url: str = "redis://127.0.0.1:6379/0"
    model_dir: Path = Path("./models")
    web_port: int = 6066
    web_host: str = "0.0.0.0"  # noqa: S104 - the worker serves /metrics to Prometheus in compose
    topic_partitions: int = 4
    topic_replication: int = 1
    topic_prefix: str = Field(default="", description="prepended to every topic (test isolation)")
    app_id: str = "leadscore"
    data_dir: Path | None = Field(
        default=None, description="Faust's local data directory (default: a temp directory)"
    )

    # Group membership: a brand-new group's first join waits out the rebalance timeout on
    # some brokers, so a short one makes start-up and failover fast.
    kafka_session_timeout_s: float = 10.0
    kafka_rebalance_timeout_s: float = 3.0
    kafka_heartbeat_interval_s: float = 1.0

    faust_fastpath: bool = Field(
        default=True, description="apply streamer.faust_fastpath (per-message overhead fixes)"
    )
    fetch_max_wait_ms: int = Field(
        default=10, description="consumer long-poll wait (fast path only); bounds idle latency"
    )
    batch_max: int = 500
    batch_wait_ms: int = Field(
        default=2,
        description="longest wait for a micro-batch to fill; under load batches fill anyway, "
        "and at low rates each event waits up to this long (10 -> 2 ms: median latency "
        "at 1,000 events/s ~8 ms lower in the bench)",
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        description="worker: allocations between young GC passes after freezing the start-up "
        "heap (streamer.gc_tuning); 0 keeps Python's defaults",
    )
    max_future_skew_s: int = 86_400
    dlq_max_value_bytes: int = Field(
        default=16 * 1024,
        ge=0,
        le=128 * 1024,
        description="original bytes kept in a DLQ record (the rest is described by its length "
        "and SHA-256); at most 131072, so that a record always fits a 1 MiB producer request",
    )
    shutdown_timeout_s: float = Field(
        default=8.0,
        gt=0,
        description="after SIGTERM the worker exits within this long, finished or not "
        "(offsets are committed only for delivered batches, so nothing is lost)",
    )
    web_request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="worker web server: a client must send its request within this long, "
        "and a request is answered within it",
    )
    web_keepalive_timeout_s: float = Field(
        default=5.0, gt=0, description="worker web server: idle keep-alive connections close"
    )
    fault_inject: Literal["", "agent"] = Field(
        default="",
        description="tests only: 'agent' makes the scoring agent fail on its first batch",
    )
    model_poll_s: float = 2.0
    max_reasons: int = 5
    explain: Literal["path", "treeshap"] = Field(
        default="path",
        description="reasons from path attributions (fast) or exact TreeSHAP (pred_contrib)",
    )
    half_life_days: float = 7.0
    rules_file: Path | None = None

    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    redis_cluster: bool = Field(
        default=False, description="REDIS_URL points at a Redis Cluster (batches split by slot)"
    )
    redis_password: SecretStr | None = None
    redis_tls: bool = False
    redis_tls_cafile: Path | None = None

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    def topic(self, name: str) -> str:
        """The full name of topic ``name`` (``web``, ``scores``, ...): ``leads.<name>``."""
        return f"{self.topic_prefix}leads.{name}"

    def require_kafka(self) -> str:
        if not self.kafka_bootstrap:
            raise ConfigError(
                "LEADSCORE_KAFKA_BOOTSTRAP is not set: point it at your Kafka (host:port), "
                "or run `leadscore demo`, which starts its own broker"
            )
        return self.kafka_bootstrap

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for producers, consumers and the admin client."""
        cfg: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.require_kafka(),
            "security.protocol": self.kafka_security_protocol,
            # A broker going away on shutdown is normal; don't print it as an error.
            "log.connection.close": "false",
        }
        if self.kafka_sasl_mechanism:
            cfg["sasl.mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            cfg["sasl.username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            cfg["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_ssl_cafile:
            cfg["ssl.ca.location"] = str(self.kafka_ssl_cafile)
        if self.kafka_ssl_certfile:
            cfg["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
        if self.kafka_ssl_keyfile:
            cfg["ssl.key.location"] = str(self.kafka_ssl_keyfile)
        return cfg

    def aiokafka_client_config(self) -> dict[str, Any]:
        """The same connection settings as keyword arguments for an aiokafka client."""
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.require_kafka(),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            cfg["ssl_context"] = create_ssl_context(
                cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None,
                certfile=str(self.kafka_ssl_certfile) if self.kafka_ssl_certfile else None,
                keyfile=str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
            )
        if self.kafka_sasl_mechanism:
            cfg["sasl_mechanism"] = self.kafka_sasl_mechanism
        if self.kafka_sasl_username:
            cfg["sasl_plain_username"] = self.kafka_sasl_username
        if self.kafka_sasl_password is not None:
            cfg["sasl_plain_password"] = self.kafka_sasl_password.get_secret_value()
        return cfg


def load_settings() -> Settings:
    """Read the environment once; a bad value becomes a :class:`ConfigError` that says which."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "LEADSCORE_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{field}: {first['msg']}") from exc
