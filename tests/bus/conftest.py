"""Fixtures of the event-bus tests: one session-scoped Kafka-protocol broker (tansu) and a `bus_case` fixture
parametrized over every adapter — the embedded log on SQLite and on PostgreSQL, and Kafka.

`TEST_KAFKA_BOOTSTRAP` points the Kafka cases at an existing broker instead of starting tansu.
A missing broker or PostgreSQL server fails the tests (tests/support/services.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from services.kernel.bus.factory import make_bus
from services.kernel.settings import Settings
from tests.conftest import unique_prefix
from tests.support.services import missing

from .support import BusCase

# Tansu takes about half the session time-out to complete a group join; these keep the tests fast.
# (Real Kafka needs session_timeout_ms >= 6000: the production defaults stay in Settings.)
KAFKA_TEST_TIMEOUTS = dict(
    kafka_replication_factor=1,  # one broker
    kafka_min_insync_replicas=1,
    kafka_session_timeout_ms=2000,
    kafka_heartbeat_interval_ms=250,
    kafka_request_timeout_ms=5000,
)
# The embedded log's group membership: a member heartbeats every session_timeout/4.
DBLOG_TEST_SESSION_TIMEOUT_MS = 2000
PARTITIONS = 4


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    from workers.broker import BrokerError, start_broker

    try:
        broker = start_broker()
    except BrokerError as exc:
        missing("the Kafka-protocol broker", f"it did not start: {exc}; or set TEST_KAFKA_BOOTSTRAP")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _settings(request: pytest.FixtureRequest, kind: str, tmp_path) -> Settings:  # noqa: ANN001
    common = dict(
        env="test",
        data_dir=tmp_path,
        event_log_partitions=PARTITIONS,
        kafka_default_partitions=PARTITIONS,
        consumer_retry_backoff_s=0.01,
    )
    if kind == "sqlite":
        return Settings(bus="dblog", **common)
    if kind == "postgres":
        pg: Settings = request.getfixturevalue("pg_settings")
        return pg.model_copy(update=common)
    if kind == "kafka":
        # The consuming/producing services keep their tables in SQLite; only the bus is Kafka.
        return Settings(
            bus="kafka",
            kafka_bootstrap=request.getfixturevalue("kafka_bootstrap"),
            **KAFKA_TEST_TIMEOUTS,
            **common,
        )
    raise AssertionError(kind)


ADAPTERS = [
    pytest.param("sqlite", id="dblog-sqlite"),
    pytest.param("postgres", id="dblog-postgres", marks=pytest.mark.postgres),
    pytest.param("kafka", id="kafka", marks=pytest.mark.kafka),
]


@pytest.fixture(params=ADAPTERS)
def bus_case(request: pytest.FixtureRequest, tmp_path) -> Iterator[BusCase]:  # noqa: ANN001
    yield from _case(request, request.param, tmp_path)


@pytest.fixture(params=[p for p in ADAPTERS if p.values[0] != "kafka"])
def dblog_case(request: pytest.FixtureRequest, tmp_path) -> Iterator[BusCase]:  # noqa: ANN001
    """The embedded log only (SQLite and PostgreSQL), for what Kafka leaves to the broker (retention)."""
    yield from _case(request, request.param, tmp_path)


def _case(request: pytest.FixtureRequest, kind: str, tmp_path) -> Iterator[BusCase]:  # noqa: ANN001
    settings = _settings(request, kind, tmp_path)
    bus = make_bus(settings)
    if kind != "kafka":
        bus.session_timeout_ms = DBLOG_TEST_SESSION_TIMEOUT_MS  # type: ignore[attr-defined]
    case = BusCase(kind=kind, bus=bus, settings=settings, prefix=unique_prefix())
    try:
        yield case
    finally:
        case.close()


@pytest.fixture
def bus(bus_case: BusCase):  # noqa: ANN201
    return bus_case.bus
