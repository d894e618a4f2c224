"""Pick the bus adapter from settings, and read the topic declarations in infra/kafka/topics.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..settings import ConfigError, Settings
from .port import EventBus, TopicSpec

TOPICS_FILE = Path(__file__).resolve().parents[3] / "infra" / "kafka" / "topics.toml"


def declared_topics(extra: list[str] = ()) -> list[TopicSpec]:  # type: ignore[assignment]
    cfg = tomllib.loads(TOPICS_FILE.read_text())
    d = cfg.get("defaults", {})
    specs = [
        TopicSpec(
            name,
            t.get("partitions", d.get("partitions", 6)),
            t.get("retention_hours", d.get("retention_hours", 168)),
        )
        for name, t in cfg.get("topics", {}).items()
    ]
    names = {s.name for s in specs}
    specs += [
        TopicSpec(n, d.get("partitions", 6), d.get("retention_hours", 168)) for n in extra if n not in names
    ]
    return specs


def make_bus(settings: Settings) -> EventBus:
    if settings.bus == "kafka":
        from .kafka import KafkaBus

        return KafkaBus(
            settings.kafka_bootstrap,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            request_timeout_ms=settings.kafka_request_timeout_ms,
            default_partitions=settings.kafka_default_partitions,
            connect_timeout_ms=settings.kafka_connect_timeout_ms,
            compression_type=None if settings.kafka_compression == "none" else settings.kafka_compression,
        )
    if settings.bus == "dblog":
        from .dblog import DbLogBus

        return DbLogBus(
            settings.log_url(),
            default_partitions=settings.event_log_partitions,
            retention_hours=settings.event_log_retention_hours,
            session_timeout_ms=settings.dblog_session_timeout_ms,
            schema=settings.db_schema("eventlog"),
        )
    raise ConfigError(f"BUS must be 'dblog' or 'kafka', not {settings.bus!r}")
