"""One settings object, read from the environment, with embedded defaults.

Switching between the embedded run and the distributed run is configuration only.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class StrictSettings(BaseSettings):
    """The base of every settings class (the platform's, the gateway's, each service's): a name that is not one of
    its fields is refused, whether passed when it is built or to `model_copy`, never silently dropped. A gateway or
    service setting (GATEWAY_REDIS_PREFIX, BOOKING_...) belongs to its own class, which reads the environment."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _known(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            cls._refuse_unknown(data)
        return data

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with some fields changed (pydantic does not validate `update`: an unknown name would be kept
        as an attribute that nothing reads)."""
        type(self)._refuse_unknown(update or {})
        return super().model_copy(update=update, deep=deep)

    @classmethod
    def _refuse_unknown(cls, names: Mapping[str, Any]) -> None:
        unknown = sorted(k for k in names if k.lower() not in cls.model_fields)
        if unknown:
            raise ConfigError(
                f"not {cls.__name__} fields: {', '.join(unknown)}. The gateway and each service read their own "
                "settings (gateway/settings.py: GATEWAY_REDIS_PREFIX, TRUST_FORWARDED_FOR, ...; "
                "services/<name>/settings.py: BOOKING_..., ...) from the environment"
            )


class Settings(StrictSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="forbid")

    # dev: login codes come back in the reply and missing secrets are minted into DATA_DIR; prod refuses to start
    # without JWT_SECRET and PII_KEY
    env: Literal["dev", "test", "prod"] = "dev"
    data_dir: Path = Path("data")  # SQLite files, exports, dev secrets
    host: str = "127.0.0.1"  # the gateway's address
    port: int = 8080

    # Databases. `{service}` is replaced by the service name (SQLite: one file per service).
    # A PostgreSQL URL puts every service in its own schema of that database.
    database_url: str = "sqlite:///{data_dir}/{service}.db"
    # PostgreSQL: the schema of service `x` is `{db_schema_prefix}x` (tests isolate runs with a prefix)
    db_schema_prefix: str = ""
    # connections a service keeps open to its database, and how many more it may open at a busy moment: on
    # PostgreSQL a deployment needs max_connections above processes × (pool + overflow) (docker-compose.yml)
    db_pool_size: int = Field(10, ge=1)
    db_max_overflow: int = Field(20, ge=0)
    # embedded log = the durable event log in a database; kafka = Apache Kafka via kafka-python
    bus: Literal["dblog", "kafka"] = "dblog"
    event_log_url: str = "sqlite:///{data_dir}/eventlog.db"  # the embedded log's database
    # embedded log: partitions of a topic made on first use, and of the dead-letter topics
    event_log_partitions: int = 4
    event_log_retention_hours: int = 24 * 7  # embedded log: records older than this are deleted
    # dead-letter topics (dlq.<group>) and their replay records: parked records wait for an operator
    dlq_retention_hours: int = Field(30 * 24, ge=30 * 24)
    # the Kafka brokers (run-dist starts its own unless this is set in the environment)
    kafka_bootstrap: str = "127.0.0.1:9092"
    # consumer group membership: a member silent this long is dropped and its partitions handed on
    kafka_session_timeout_ms: int = 10000
    kafka_heartbeat_interval_ms: int = 3000
    kafka_request_timeout_ms: int = 30000  # a publish gives up after twice this (docs/reliability.md)
    kafka_default_partitions: int = 6  # partitions of a topic not declared in infra/kafka/topics.toml
    # 0: topics.toml's (production: 3 and 2); a single-broker run sets 1 and 1
    kafka_replication_factor: int = 0
    kafka_min_insync_replicas: int = 0
    kafka_connect_timeout_ms: int = 5000  # a broker not reached by then stops start-up with a message
    # "none" keeps the relay closest to raw kafka-python; "gzip" raises absolute throughput here (kafka-python
    # checks CRCs in pure Python, so fewer bytes is faster) at the price of CPU. See bench/bus.py.
    kafka_compression: Literal["none", "gzip"] = "none"
    dblog_session_timeout_ms: int = 10000  # embedded log: a group member silent this long is dropped

    # Idempotency-Keys each service keeps with the work they committed (services/kernel/idempotency.py)
    idempotency_retention_hours: int = Field(24, ge=1)
    # a committed key without its reply is "in progress" this long (409 Retry-After); after it the request that
    # committed is taken for gone and the reply is rebuilt from what it made
    idempotency_in_progress_s: float = Field(60, gt=0)

    # consumer runner: a failing record is tried this many times, with a back-off from 0.2 s, then parked
    consumer_max_attempts: int = 5
    consumer_retry_backoff_s: float = 0.2
    relay_batch_size: int = 500  # outbox rows a relay publishes at once
    # a row the relay failed this many times while the bus was up is parked (see services/kernel/outbox.py)
    relay_max_attempts: int = 10
    relay_idle_sleep_s: float = 0.05  # how long a relay with nothing to send waits before it looks again

    # jobs: Celery's broker and results (run-dist: REDIS_URL)
    celery_broker_url: str = "sqla+sqlite:///{data_dir}/celery.db"
    celery_result_backend: str = "db+sqlite:///{data_dir}/celery-results.db"
    # set: idempotency keys, rate limits and token versions live in Redis, shared by every process (unset: in
    # memory, and the gateway's keys in DATA_DIR/gateway.db)
    redis_url: str = ""

    # the payment provider: the in-process sandbox or Stripe (docs/payments.md)
    payments: Literal["sandbox", "stripe"] = "sandbox"
    stripe_api_key: str = ""
    stripe_api_base: str = ""  # another Stripe-compatible server (the tests: localstripe); "" = Stripe's
    stripe_webhook_secret: str = ""
    # listings' search index: SQLite FTS5 or Elasticsearch at ELASTICSEARCH_URL (docs/listings.md)
    search: Literal["sqlite", "elasticsearch"] = "sqlite"
    elasticsearch_url: str = ""

    # security (decision 003): secrets from the environment (dev: minted into DATA_DIR/dev-secrets.json)
    jwt_secret: str = ""
    pii_key: str = ""  # urlsafe base64 of 32 bytes (AES-GCM key)
    access_token_ttl_s: int = 3600
    refresh_token_ttl_s: int = 30 * 24 * 3600
    admin_phones: str = ""  # comma-separated phone numbers that get the admin role when they log in
    cors_origin: str = "http://127.0.0.1:8080"  # comma-separated origins that get CORS headers
    max_body_bytes: int = 1_048_576  # larger request bodies are refused with 413
    rate_limit_per_minute: int = 600  # requests per user ...
    rate_limit_ip_per_minute: int = 1200  # ... and per client address (429 with Retry-After past either)
    # SMS pumping budgets of POST /v1/auth/otp, besides accounts' per-phone limit: codes per client (IP) per
    # 10 minutes, and codes per minute for the whole platform. Load tests and test harnesses raise them.
    # (dev sends no SMS, the code comes back in the reply: unless set, a client there gets 1000, so one shell can
    # walk through the docs, which log in a dozen phones)
    otp_per_client_limit: int = 10
    otp_global_limit: int = 300
    # /metrics answers only `Authorization: Bearer <METRICS_TOKEN>` (the scraper's); unset, it is not served at all
    metrics_token: str = ""

    # distributed gateway: service name -> base URL, JSON, e.g. {"booking": "http://127.0.0.1:8102"}
    service_urls: str = ""
    # which services this process hosts ("all" in the embedded run)
    services: str = "all"

    log_level: str = "INFO"  # of every process's JSON log (personal data redacted: workers/logs.py)

    @field_validator("data_dir")
    @classmethod
    def _abs(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    # --- derived -------------------------------------------------------------------------
    def db_url(self, service: str) -> str:
        return self.database_url.format(service=service, data_dir=self.data_dir)

    def db_schema(self, service: str) -> str:
        return f"{self.db_schema_prefix}{service}"

    def log_url(self) -> str:
        return self.event_log_url.format(data_dir=self.data_dir, service="eventlog")

    def fmt(self, value: str) -> str:
        return value.format(data_dir=self.data_dir)

    @property
    def admin_phone_set(self) -> set[str]:
        return {p.strip() for p in self.admin_phones.split(",") if p.strip()}

    @property
    def service_url_map(self) -> dict[str, str]:
        return json.loads(self.service_urls) if self.service_urls else {}

    def hosted_services(self, available: list[str]) -> list[str]:
        if self.services == "all":
            return list(available)
        wanted = [s.strip() for s in self.services.split(",") if s.strip()]
        unknown = set(wanted) - set(available)
        if unknown:
            raise ConfigError(f"SERVICES names unknown services: {sorted(unknown)}; known: {available}")
        return wanted

    @model_validator(mode="after")
    def _dev_sends_no_sms(self) -> Settings:
        if self.env == "dev" and "otp_per_client_limit" not in self.model_fields_set:
            object.__setattr__(self, "otp_per_client_limit", 1000)
        return self

    def secret(self, name: Literal["jwt_secret", "pii_key"]) -> str:
        """Secrets come from the environment. Only the dev run may mint its own (kept in DATA_DIR)."""
        value = getattr(self, name)
        if value:
            return value
        if self.env == "prod":
            raise ConfigError(f"{name.upper()} must be set in the environment in prod")
        return _dev_secrets(self.data_dir)[name]


class ConfigError(RuntimeError):
    """Bad configuration: the message says what to fix."""


def _dev_secrets(data_dir: Path) -> dict[str, str]:
    import base64

    path = data_dir / "dev-secrets.json"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        values = {
            "jwt_secret": secrets.token_urlsafe(48),
            "pii_key": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(values))
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)  # atomic create-if-absent: concurrent starters agree on one secret
        except FileExistsError:
            pass
        tmp.unlink(missing_ok=True)
    return json.loads(path.read_text())


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
