"""Settings: one frozen object, read once from ``LEADSCORE_*`` environment variables."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, SettingsConfigDict

from leadscore.errors import ConfigError


class Settings(BaseSettings):
    """Every knob of the worker and CLI. Credentials are ``SecretStr`` and never logged."""

    model_config = SettingsConfigDict(env_prefix="LEADSCORE_", frozen=True, extra="ignore")

    kafka_bootstrap: str | None = Field(
        default=None,
        description="host:port[,host:port]; unset means the demo starts its own broker",
    )
    redis_url: str | None = Field(
        default=None,
        description="the feature store, e.g. redis://127.0.0.1:6379/0; the worker, the API, "
        "rebuild and forget need it; demo, up and bench start their own Redis when unset",
    )
    model_dir: Path = Path("./models")
    model_registry: str | None = Field(
        default=None,
        description="the model registry on an object store (s3://bucket/models), shared by "
        "workers, retrain jobs and the API on other machines; overrides MODEL_DIR",
    )
    archive_root: str | None = Field(
        default=None,
        description="the event archive (`leadscore archive`): a directory or an fsspec URL "
        "such as s3://bucket/prefix; `retrain` and `train --events` read it",
    )
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
        default=True,
        description="apply leadscore.streamer.faust_fastpath (Faust's per-message overheads)",
    )
    fetch_max_wait_ms: int = Field(
        default=10, description="consumer long-poll wait (fast path only); bounds idle latency"
    )
    batch_max: int = 500
    batch_wait_ms: int = Field(
        default=2,
        description="longest wait for a micro-batch to fill; under load batches fill anyway, "
        "and at low rates each event waits up to this long",
    )
    gc_gen0_threshold: int = Field(
        default=50_000,
        description="worker: allocations between young GC passes after freezing the start-up "
        "heap (leadscore.streamer.gc_tuning); 0 keeps Python's defaults",
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
    rules_file: Path | None = None
    alert_margin: float = Field(
        default=0.02,
        ge=0,
        lt=1,
        description="a tier change is announced on leads.alerts only once the score is past "
        "the tier boundary by this much (hysteresis: no flapping around a boundary)",
    )
    alert_interval_s: float = Field(
        default=3600.0,
        ge=0,
        description="at most one tier-change alert per lead within this many seconds",
    )
    drift_bins: bool = Field(
        default=True,
        description="workers count every scored feature vector into the model's reference "
        "bins (leadscore_feature_bin_total) for the monitor's drift tests",
    )

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
    redis_wait_replicas: int = Field(
        default=0,
        ge=0,
        description="before a batch's offsets are committed, wait until this many replicas of "
        "every Redis master have its writes (WAIT); 1 on a cluster with replicas makes a "
        "master failover lose nothing; 0 does not wait",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000,
        ge=1,
        description="how long that wait may take; a batch not replicated by then is not "
        "committed, and the worker exits for its supervisor to restart it",
    )
    redis_username: str | None = Field(
        default=None,
        description="the Redis ACL user (Redis 6+; docs/security.md has the ACL leadscore "
        "needs); requires LEADSCORE_REDIS_PASSWORD",
    )
    redis_password: SecretStr | None = None
    redis_tls: bool = Field(
        default=False, description="TLS to Redis (a rediss:// REDIS_URL turns it on as well)"
    )
    redis_tls_cafile: Path | None = Field(
        default=None,
        description="the CA certificates Redis's certificate is checked against (default: "
        "the system's)",
    )
    redis_tls_certfile: Path | None = Field(
        default=None,
        description="mutual TLS: this client's certificate (PEM), with REDIS_TLS_KEYFILE",
    )
    redis_tls_keyfile: Path | None = Field(
        default=None, description="mutual TLS: the private key of REDIS_TLS_CERTFILE (PEM)"
    )

    sync_webhook_authorization: SecretStr | None = Field(
        default=None,
        description="`sync` webhook: the Authorization header's value (e.g. 'Bearer ...')",
    )
    sync_tries: int = Field(
        default=5, ge=1, description="`sync` webhook: tries per batch before it is dead-lettered"
    )
    sync_dead_letter: Path = Field(
        default=Path("sync-dead-letter.jsonl"),
        description="`sync` webhook: where batches the endpoint never took are written",
    )
    api_host: str = Field(
        default="127.0.0.1",
        description="`leadscore api` binds here; on any other than a loopback address it "
        "requires API keys (or LEADSCORE_API_ALLOW_ANONYMOUS)",
    )
    api_port: int = Field(default=8080, description="`leadscore api`'s port")
    api_keys: str = Field(
        default="",
        description="comma-separated API keys as name=sha256hex[:read+score] (`leadscore api "
        "keygen` prints one); a request then needs one of them",
    )
    api_keys_file: Path | None = Field(
        default=None, description="a file of API keys in the same form, one per line"
    )
    api_allow_anonymous: bool = Field(
        default=False,
        description="serve without API keys on a non-loopback address (behind a gateway that "
        "authenticates)",
    )
    api_rate_limit: float = Field(
        default=0.0,
        ge=0,
        description="requests per second per API key and per API replica; 0 means no limit",
    )
    api_rate_burst: int = Field(default=20, ge=1, description="requests a key may send at once")
    api_max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="larger request bodies are refused (413)"
    )
    sync_metrics_port: int = Field(
        default=6068, ge=0, description="`leadscore sync`'s /metrics port; 0 serves none"
    )
    sync_metrics_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the sync in compose
    monitor_port: int = Field(default=6067, description="`leadscore monitor`'s /metrics port")
    monitor_host: str = "0.0.0.0"  # noqa: S104 - Prometheus scrapes the monitor in compose
    monitor_state_dir: Path = Field(
        default=Path("monitor"),
        description="the monitor's state (offsets, sampled moments, history) and its report",
    )
    monitor_interval_s: float = Field(
        default=15.0, gt=0, description="seconds between the monitor's evaluations"
    )
    monitor_window_days: float = Field(
        default=30.0,
        gt=0,
        description="online performance covers the matured moments scored in this many days "
        "before the newest matured one",
    )
    monitor_horizon_days: float = Field(
        default=30.0,
        gt=0,
        description="the outcome horizon of models that don't store one (trained from a table)",
    )
    monitor_scrape: str = Field(
        default="",
        description="comma-separated worker /metrics URLs whose bin counters the monitor's "
        "drift tests read (a host name resolving to several addresses is scraped at each)",
    )
    monitor_drift_window: int = Field(
        default=5000, ge=100, description="drift is tested over the last this many vectors"
    )
    monitor_drift_alpha: float = Field(
        default=0.01,
        gt=0,
        lt=1,
        description="family-wise false-alarm rate of a window's drift tests (all features)",
    )
    monitor_segments: str = Field(
        default="company_size,country,industry,lead_source",
        description="comma-separated lead attributes (from CRM events) that fairness is "
        "reported for",
    )
    monitor_min_group: int = Field(
        default=50, ge=1, description="fairness: the fewest matured moments a segment needs"
    )
    sensitive: str = Field(
        default="",
        description="comma-separated attributes that may be reported on (fairness) but are "
        "never used as model features",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def registry_root(self) -> str | Path:
        """Where the model registry is: ``model_registry`` if set, else ``model_dir``."""
        return self.model_registry or self.model_dir

    @staticmethod
    def names(text: str) -> list[str]:
        """A comma-separated setting as a list (blanks dropped)."""
        return [part.strip() for part in text.split(",") if part.strip()]

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

    def require_redis(self) -> str:
        if not self.redis_url:
            raise ConfigError(
                "LEADSCORE_REDIS_URL is not set: point it at your Redis "
                "(redis://host:6379/0), or run `leadscore up`, which starts its own"
            )
        return self.redis_url

    def kafka_client_config(self) -> dict[str, str | int | float | bool]:
        """librdkafka (confluent-kafka) settings for producers, consumers and the admin client."""
        return KafkaConnection.of(self).librdkafka()

    def kafka_group_config(self, group_id: str) -> dict[str, str | int | float | bool]:
        """librdkafka settings for a member of consumer group ``group_id``: the client
        settings plus the worker's group timeouts. librdkafka's default session timeout
        (45 s) made a (re)started archiver or CRM sync wait about 20 s for its first
        assignment on a broker that holds a join for half of it."""
        return {
            **self.kafka_client_config(),
            "group.id": group_id,
            "session.timeout.ms": int(self.kafka_session_timeout_s * 1000),
            "heartbeat.interval.ms": int(self.kafka_heartbeat_interval_s * 1000),
        }

    def aiokafka_client_config(self) -> dict[str, Any]:
        """The same connection settings as keyword arguments for an aiokafka client."""
        return KafkaConnection.of(self).aiokafka()

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        # Half-configured security must not start: a client would otherwise connect without
        # the credentials or the TLS it was given (or fail later with an opaque broker error).
        problems = kafka_security_problems(self)
        if problems:
            raise PydanticCustomError(
                "kafka_security",
                "incomplete Kafka security settings: " + "; ".join(problems),
            )
        return self

    @property
    def redis_uses_tls(self) -> bool:
        """TLS to Redis: ``LEADSCORE_REDIS_TLS``, or a ``rediss://`` URL."""
        return self.redis_tls or _url_scheme(self.redis_url) == "rediss"

    @model_validator(mode="after")
    def _redis_security_complete(self) -> Settings:
        # As for Kafka: a half-configured Redis connection would connect without the TLS or
        # the credentials it was given, or fail later with an error that names no setting.
        problems = redis_security_problems(self)
        if problems:
            raise PydanticCustomError(
                "redis_security",
                "incomplete Redis security settings: " + "; ".join(problems),
            )
        return self


@dataclass(frozen=True)
class KafkaConnection:
    """How to reach Kafka, mapped once to each client library's settings: librdkafka
    (confluent-kafka), aiokafka, and Faust's broker credentials."""

    bootstrap: str
    protocol: str
    sasl_mechanism: str | None
    sasl_username: str | None
    sasl_password: SecretStr | None
    cafile: Path | None
    certfile: Path | None
    keyfile: Path | None

    @classmethod
    def of(cls, settings: Settings) -> KafkaConnection:
        return cls(
            settings.require_kafka(),
            settings.kafka_security_protocol,
            settings.kafka_sasl_mechanism,
            settings.kafka_sasl_username,
            settings.kafka_sasl_password,
            settings.kafka_ssl_cafile,
            settings.kafka_ssl_certfile,
            settings.kafka_ssl_keyfile,
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def _password(self) -> str:
        return self.sasl_password.get_secret_value() if self.sasl_password is not None else ""

    def librdkafka(self) -> dict[str, str | int | float | bool]:
        cfg: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.protocol,
            # A broker going away on shutdown is normal; don't print it as an error.
            "log.connection.close": "false",
        }
        if self.sasl_mechanism:
            cfg["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl.username"] = self.sasl_username
        if self.sasl_password is not None:
            cfg["sasl.password"] = self._password()
        for key, path in (
            ("ssl.ca.location", self.cafile),
            ("ssl.certificate.location", self.certfile),
            ("ssl.key.location", self.keyfile),
        ):
            if path:
                cfg[key] = str(path)
        return cfg

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context aiokafka and Faust use (None without TLS)."""
        if not self.tls:
            return None
        context = ssl.create_default_context(
            purpose=ssl.Purpose.SERVER_AUTH, cafile=str(self.cafile) if self.cafile else None
        )
        if self.certfile:
            context.load_cert_chain(str(self.certfile), str(self.keyfile) if self.keyfile else None)
        return context

    def aiokafka(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.protocol,
        }
        if self.tls:
            cfg["ssl_context"] = self.ssl_context()
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            cfg["sasl_plain_username"] = self.sasl_username
        if self.sasl_password is not None:
            cfg["sasl_plain_password"] = self._password()
        return cfg

    def faust_credentials(self) -> Any:
        """Faust's ``broker_credentials`` (None for PLAINTEXT)."""
        if not self.tls and not self.sasl:
            return None
        import faust

        if not self.sasl:
            return faust.SSLCredentials(self.ssl_context())
        return faust.SASLCredentials(
            username=self.sasl_username or "",
            password=self._password(),
            mechanism=self.sasl_mechanism or "PLAIN",
            ssl_context=self.ssl_context(),
        )


def kafka_security_problems(settings: Settings) -> list[str]:
    """What is missing or contradictory in the Kafka security settings, each naming the
    ``LEADSCORE_*`` variable to set. TLS and SASL are never implied by the other settings:
    the protocol says which are on, and what it turns on must be complete."""
    protocol = settings.kafka_security_protocol
    password = settings.kafka_sasl_password
    sasl_given = {
        "LEADSCORE_KAFKA_SASL_MECHANISM": bool(settings.kafka_sasl_mechanism),
        "LEADSCORE_KAFKA_SASL_USERNAME": bool(settings.kafka_sasl_username),
        "LEADSCORE_KAFKA_SASL_PASSWORD": password is not None and bool(password.get_secret_value()),
    }
    tls_given = {
        "LEADSCORE_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile is not None,
        "LEADSCORE_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile is not None,
        "LEADSCORE_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile is not None,
    }
    problems: list[str] = []
    sasl_on = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    if sasl_on or any(sasl_given.values()):
        problems += [
            f"{name} is not set (SASL needs a mechanism, a username and a password)"
            for name, given in sasl_given.items()
            if not given
        ]
    if not sasl_on and any(sasl_given.values()):
        named = ", ".join(name for name, given in sasl_given.items() if given)
        problems.append(
            f"LEADSCORE_KAFKA_SECURITY_PROTOCOL is {protocol}, not SASL_SSL or SASL_PLAINTEXT, "
            f"yet {named} is set"
        )
    if protocol not in ("SSL", "SASL_SSL") and any(tls_given.values()):
        named = ", ".join(name for name, given in tls_given.items() if given)
        problems.append(
            f"LEADSCORE_KAFKA_SECURITY_PROTOCOL is {protocol}, not SSL or SASL_SSL, yet {named} "
            "is set"
        )
    cert, key = tls_given["LEADSCORE_KAFKA_SSL_CERTFILE"], tls_given["LEADSCORE_KAFKA_SSL_KEYFILE"]
    if cert and not key:
        problems.append(
            "LEADSCORE_KAFKA_SSL_KEYFILE is not set (the client certificate's private key; "
            "for a PEM holding both, name it in both settings)"
        )
    if key and not cert:
        problems.append("LEADSCORE_KAFKA_SSL_CERTFILE is not set (the key's client certificate)")
    return problems


def _url_scheme(url: str | None) -> str:
    return urlsplit(url).scheme.lower() if url else ""


def redis_security_problems(settings: Settings) -> list[str]:
    """What is missing or contradictory in the Redis security settings, each naming the
    ``LEADSCORE_*`` variable to set or unset. The URL may carry the TLS scheme (``rediss://``)
    and the credentials (``redis://user:password@host``); redis-py would let a credential in
    the URL silently override the setting, so each may be given in one place only. A
    ``rediss://`` URL means TLS whatever ``LEADSCORE_REDIS_TLS`` says (the safer reading, and
    settings passed on as environment variables carry ``LEADSCORE_REDIS_TLS=False``)."""
    url = urlsplit(settings.redis_url or "")
    scheme = url.scheme.lower()
    problems: list[str] = []
    if scheme == "unix" and settings.redis_tls:
        problems.append(
            "LEADSCORE_REDIS_TLS is true, yet LEADSCORE_REDIS_URL is a unix socket (no TLS)"
        )
    tls_files = {
        "LEADSCORE_REDIS_TLS_CAFILE": settings.redis_tls_cafile,
        "LEADSCORE_REDIS_TLS_CERTFILE": settings.redis_tls_certfile,
        "LEADSCORE_REDIS_TLS_KEYFILE": settings.redis_tls_keyfile,
    }
    given = [name for name, path in tls_files.items() if path is not None]
    if given and not settings.redis_uses_tls:
        problems.append(
            f"LEADSCORE_REDIS_TLS is not set (nor is LEADSCORE_REDIS_URL rediss://), yet "
            f"{', '.join(given)} is set: TLS would be off"
        )
    cert, key = settings.redis_tls_certfile, settings.redis_tls_keyfile
    if cert is not None and key is None:
        problems.append(
            "LEADSCORE_REDIS_TLS_KEYFILE is not set (the client certificate's private key; "
            "for a PEM holding both, name it in both settings)"
        )
    if key is not None and cert is None:
        problems.append("LEADSCORE_REDIS_TLS_CERTFILE is not set (the key's client certificate)")
    if url.username and settings.redis_username:
        problems.append(
            "LEADSCORE_REDIS_URL carries a user name and LEADSCORE_REDIS_USERNAME is set too: "
            "give it in one place"
        )
    if url.password and settings.redis_password is not None:
        problems.append(
            "LEADSCORE_REDIS_URL carries a password and LEADSCORE_REDIS_PASSWORD is set too: "
            "give it in one place"
        )
    password = settings.redis_password
    has_password = bool(url.password or (password and password.get_secret_value()))
    if (url.username or settings.redis_username) and not has_password:
        problems.append(
            "LEADSCORE_REDIS_PASSWORD is not set (a user name is given, and an ACL user logs "
            "in with a password)"
        )
    return problems


def load_settings() -> Settings:
    """Read the environment once; a bad value becomes a :class:`ConfigError` that says which."""
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = "LEADSCORE_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise ConfigError(f"{field}: {first['msg']}") from exc
