"""Fix 2: Kafka topics get the replication factor and min.insync.replicas of topics.toml (production: 3 / 2) or
of the settings (a single-broker run: 1 / 1) — declared topics, dead-letter topics and topics created on first
use alike."""

from __future__ import annotations

import pytest

from services.kernel.bus.factory import declared_topics, durability
from services.kernel.bus.kafka import KafkaBus
from services.kernel.bus.port import TopicSpec
from services.kernel.settings import Settings
from tests.conftest import unique_prefix


def test_production_defaults_come_from_topics_toml_and_settings_override_them():
    assert durability() == (3, 2)
    assert {(t.replication_factor, t.min_insync_replicas) for t in declared_topics(settings=Settings())} == {
        (3, 2)
    }
    single = Settings(kafka_replication_factor=1, kafka_min_insync_replicas=1)
    assert {(t.replication_factor, t.min_insync_replicas) for t in declared_topics(["dlq.x"], single)} == {
        (1, 1)
    }
    assert durability(Settings(kafka_replication_factor=2)) == (
        2,
        2,
    )  # never more in-sync replicas than copies


@pytest.mark.kafka
def test_the_kafka_adapter_asks_for_them_on_every_topic_it_creates(kafka_bootstrap):
    bus = KafkaBus(kafka_bootstrap, replication_factor=3, min_insync_replicas=2, request_timeout_ms=5000)
    sent: list[dict] = []
    real = bus._admin.create_topics

    def spy(request, **kw):  # noqa: ANN001, ANN202 - the real admin client, watched
        sent.append(request)
        return real(request, **kw)

    bus._admin.create_topics = spy  # type: ignore[method-assign]
    p = unique_prefix()
    try:
        bus.ensure_topics([TopicSpec(f"{p}declared", 2, 24, 3, 2), TopicSpec(f"dlq.{p}group", 2, 720, 3, 2)])
        bus.partitions(f"{p}first.use")  # unknown: created with the adapter's defaults
    finally:
        bus.close()
    asked = {
        name: (r["replication_factor"], r["configs"]["min.insync.replicas"])
        for req in sent
        for name, r in req.items()
    }
    assert asked == {f"{p}declared": (3, "2"), f"dlq.{p}group": (3, "2"), f"{p}first.use": (3, "2")}
    assert sent[0][f"dlq.{p}group"]["configs"]["retention.ms"] == str(720 * 3_600_000)
