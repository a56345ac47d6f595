"""Settings: one frozen object, read once from ``LEADSCORE_*`` environment variables."""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from leadscore.errors import ConfigError
from leadscore.features.definitions import DAY_MS, RETENTION_MS, WINDOW_MS
from leadscore.schemas.privacy import (
    DEFAULT_PII_ATTRIBUTES,
    DEFAULT_PII_PATTERNS,
    Redactor,
    compile_patterns,
)

#: The longest stretch of event time a lead's state must remember: the longest feature
#: window, or the retention that late events and event ids are kept within.
LONGEST_WINDOW_MS = max(*WINDOW_MS.values(), RETENTION_MS)

#: The shortest ``LEADSCORE_PRIVACY_KEY`` accepted.
MIN_PRIVACY_KEY_CHARS = 16


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
    erasure_suppress_days: int = Field(
        default=30,
        ge=1,
        description="after an erasure (`leadscore forget`, leads.erasure) the lead's later "
        "events are dropped and counted for this long, so a producer still sending them "
        "can't bring the lead back; then the suppression entry expires too",
    )
    erasure_wait_s: float = Field(
        default=60.0,
        ge=0,
        description="an erasure waits up to this long for the worker and archive groups to "
        "finish what they had read before it, so their records land before its tombstones "
        "and its archive rewrite (the audit record says whether they did)",
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
    dlq_keep_raw: bool = Field(
        default=False,
        description="DLQ records keep the rejected message's original bytes; by default they "
        "keep a redacted copy (PII_ATTRIBUTES, PII_PATTERNS) and nothing of a message that "
        "isn't a JSON object, so no raw personal data waits in leads.dlq",
    )

    # No raw PII at rest (schemas/privacy.py): applied to every event at validation, before
    # anything is stored in Redis or the archive, or published (scores, DLQ).
    pii_attributes: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_PII_ATTRIBUTES,
        description="attributes (at any depth) whose values are personal data: dropped or "
        "pseudonymised (PII_ACTION); comma-separated or a JSON array, matched without case "
        "and separators (first_name = firstName); empty: none",
    )
    pii_patterns: Annotated[tuple[str, ...], NoDecode] = Field(
        default=DEFAULT_PII_PATTERNS,
        description="a JSON array of regular expressions, or builtin:email, builtin:phone, "
        "builtin:ipv4, builtin:ipv6: their matches in any string of an event are replaced "
        "(PII_ACTION); a bad one refuses to start; []: none",
    )
    pii_action: Literal["hmac", "drop"] | None = Field(
        default=None,
        description="hmac: replace by a keyed pseudonym (hmac:<24 hex>; equal values stay "
        "equal, for counting and joining), drop: remove the attribute (a match becomes "
        "[redacted]); unset: hmac when PRIVACY_KEY is set, else drop",
    )
    privacy_key: SecretStr | None = Field(
        default=None,
        description="the key of every keyed hash (PII pseudonyms, the erasure audit's lead "
        "hash): without it anyone could reverse a hash by hashing guesses; at least 16 "
        "characters (e.g. 64 hex digits from `openssl rand -hex 32`), the same for every "
        "service, and kept: a new key gives every value a new pseudonym",
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
        default="company_size,country,industry,lead_source,firmo_revenue_band",
        description="comma-separated lead attributes that fairness is reported for: CRM "
        "profile attributes, and firmo_revenue_band, firmo_industry_sector (from enrichment "
        "firmographics, as the features hold them)",
    )
    monitor_min_group: int = Field(
        default=50, ge=1, description="fairness: the fewest matured moments a segment needs"
    )
    sensitive: str = Field(
        default="",
        description="comma-separated attributes that may be reported on (fairness) but are "
        "never used as model features",
    )

    # Retention: how long each kind of data is kept (`leadscore retention` reports it all).
    state_idle_ttl_days: int = Field(
        default=37,
        description="a lead's feature state in Redis (and its event ids) expires this many "
        "days after its last update, so idle leads are forgotten on their own; it must be "
        "longer than the longest feature window (30 days), or an idle lead would lose "
        "window counts that still count",
    )
    input_retention_days: int = Field(
        default=35,
        ge=0,
        description="retention of the input topics leadscore creates "
        "(leads.web/email/crm/social/enrichment): "
        "`leadscore rebuild` replays them and needs the 30 days a feature window reaches, "
        "plus 5 days to notice a lost Redis and run it; 0 keeps them forever",
    )
    dlq_retention_days: int = Field(
        default=14,
        ge=1,
        description="retention of leads.dlq: two weeks to look into and replay rejected "
        "messages; an erased lead's DLQ records are gone this long after its erasure at most",
    )
    alerts_retention_days: int = Field(
        default=7,
        ge=1,
        description="retention of leads.alerts: tier changes are notifications, read as they "
        "come; a week covers a notifier down over a long weekend",
    )
    erasure_request_retention_days: int = Field(
        default=7,
        ge=1,
        description="retention of leads.erasure (requests name leads in clear): long enough "
        "for the erasure consumer to catch up after an outage, no longer",
    )
    erasure_audit_retention_days: int = Field(
        default=2190,
        ge=1,
        description="retention of leads.erasure.audit: six years (the longest common "
        "limitation period for claims) to show that each erasure was done; a record names "
        "the lead by keyed hash only",
    )
    archive_retention_days: int = Field(
        default=395,
        ge=0,
        description="the event archive's date partitions older than this are deleted (by "
        "`leadscore archive` hourly, and `leadscore retention --apply`): a year of history "
        "for retraining across a full seasonal cycle, plus the 30-day feature warm-up; "
        "0 keeps it forever",
    )

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("state_idle_ttl_days")
    @classmethod
    def _state_outlives_the_windows(cls, days: int) -> int:
        # Expiry is counted from a lead's last update; were it shorter than a window, an
        # idle lead's state would vanish while its events still count in that window (and
        # the online features would part from the offline replay's).
        if days * DAY_MS <= LONGEST_WINDOW_MS:
            longest = LONGEST_WINDOW_MS // DAY_MS
            raise PydanticCustomError(
                "state_idle_ttl",
                "{days} days is not longer than the longest feature window ({longest} days): "
                "a lead's state would expire while its events still count; set it to "
                "{least} or more (default 37)",
                {"days": days, "longest": longest, "least": longest + 1},
            )
        return days

    @property
    def state_ttl_s(self) -> int:
        """A lead's Redis keys expire this many seconds after its last update
        (``state_idle_ttl_days``; the feature store's ``ttl_s``)."""
        return self.state_idle_ttl_days * DAY_MS // 1000

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

    @field_validator("pii_attributes", mode="before")
    @classmethod
    def _names_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("pii_patterns", mode="before")
    @classmethod
    def _patterns_list(cls, value: Any) -> Any:
        # A JSON array, not a comma-separated list: regular expressions hold commas.
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if not isinstance(parsed, list):
                raise ValueError(
                    "must be a JSON array of regular expressions or builtin:NAME, e.g. "
                    '["builtin:email", "builtin:phone", "\\\\bDE\\\\d{9}\\\\b"]'
                )
            return parsed
        return value

    @field_validator("pii_patterns")
    @classmethod
    def _patterns_compile(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        compile_patterns(value)  # a PrivacyConfigError (a ValueError) names the pattern
        return value

    @field_validator("privacy_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        # Compose passes an unset variable as "" (LEADSCORE_PRIVACY_KEY: ${...:-}): no key.
        return None if value == "" else value

    @field_validator("privacy_key")
    @classmethod
    def _key_long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value():
            return None  # an empty variable (compose's `${LEADSCORE_PRIVACY_KEY:-}`) is no key
        # A short key can be guessed, and with it every pseudonym reversed by hashing
        # candidate e-mail addresses or lead ids.
        if key is not None and len(key.get_secret_value()) < MIN_PRIVACY_KEY_CHARS:
            raise PydanticCustomError(
                "privacy_key",
                "is shorter than {least} characters: use a random one, e.g. 64 hex digits "
                "from `openssl rand -hex 32`",
                {"least": MIN_PRIVACY_KEY_CHARS},
            )
        return key

    @model_validator(mode="after")
    def _pii_action_has_key(self) -> Settings:
        # Asked for pseudonyms without a key, falling back to dropping would silently lose
        # what the operator wanted to keep (joins, distinct counts): refuse instead.
        if self.pii_action == "hmac" and self.privacy_key is None:
            raise PydanticCustomError(
                "pii_action",
                "LEADSCORE_PII_ACTION is hmac but LEADSCORE_PRIVACY_KEY is not set: set a key "
                "(at least 16 characters), or LEADSCORE_PII_ACTION=drop",
            )
        return self

    @cached_property
    def redactor(self) -> Redactor:
        """The PII policy of these settings, built once (``schemas/privacy.py``)."""
        key = self.privacy_key.get_secret_value().encode("utf-8") if self.privacy_key else None
        return Redactor.build(
            attributes=self.pii_attributes,
            patterns=self.pii_patterns,
            key=key,
            action=self.pii_action,
        )

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
