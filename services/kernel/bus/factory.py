"""Pick the bus adapter from settings, and read the topic declarations in infra/kafka/topics.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from ..settings import ConfigError, Settings
from .port import EventBus, TopicSpec

TOPICS_FILE = Path(__file__).resolve().parents[3] / "infra" / "kafka" / "topics.toml"


def durability(settings: Settings | None = None) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for Kafka topics: KAFKA_REPLICATION_FACTOR and
    KAFKA_MIN_INSYNC_REPLICAS when set (> 0), else topics.toml's defaults (production's 3 / 2)."""
    d = tomllib.loads(TOPICS_FILE.read_text()).get("defaults", {})
    rf, isr = int(d.get("replication_factor", 3)), int(d.get("min_insync_replicas", 2))
    if settings is not None and settings.kafka_replication_factor > 0:
        rf = settings.kafka_replication_factor
    if settings is not None and settings.kafka_min_insync_replicas > 0:
        isr = settings.kafka_min_insync_replicas
    return rf, min(isr, rf)


def declared_topics(extra: list[str] = (), settings: Settings | None = None) -> list[TopicSpec]:  # type: ignore[assignment]
    """The topics of topics.toml (and `extra` ones with the defaults). Settings override the replication factor
    and min.insync.replicas of every topic (a single-broker run); otherwise a topic's own values or the defaults."""
    cfg = tomllib.loads(TOPICS_FILE.read_text())
    d = cfg.get("defaults", {})
    rf, isr = durability(settings)
    forced = settings is not None and settings.kafka_replication_factor > 0

    def spec(name: str, t: dict) -> TopicSpec:
        t_rf = rf if forced else int(t.get("replication_factor", rf))
        t_isr = (
            isr
            if forced and settings and settings.kafka_min_insync_replicas > 0
            else int(t.get("min_insync_replicas", isr))
        )
        return TopicSpec(
            name,
            t.get("partitions", d.get("partitions", 6)),
            t.get("retention_hours", d.get("retention_hours", 168)),
            t_rf,
            min(t_isr, t_rf),
        )

    specs = [spec(name, t) for name, t in cfg.get("topics", {}).items()]
    names = {s.name for s in specs}
    specs += [spec(n, {}) for n in extra if n not in names]
    return specs


def make_bus(settings: Settings) -> EventBus:
    if settings.bus == "kafka":
        from .kafka import KafkaBus

        return KafkaBus(
            settings.kafka_bootstrap,
            replication_factor=durability(settings)[0],
            min_insync_replicas=durability(settings)[1],
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
