"""What is particular to the Kafka adapter and the local broker: failing fast with a useful message, and
starting/stopping tansu."""

from __future__ import annotations

import socket
import time

import pytest

from services.kernel.bus.factory import make_bus
from services.kernel.settings import ConfigError, Settings
from workers.broker import free_port, kafka_ready


def test_an_unreachable_broker_fails_fast_saying_what_to_fix(tmp_path) -> None:  # noqa: ANN001
    settings = Settings(
        env="test", data_dir=tmp_path, bus="kafka", kafka_bootstrap=f"127.0.0.1:{free_port()}"
    )
    started = time.monotonic()
    with pytest.raises(ConfigError) as err:
        make_bus(settings)
    assert time.monotonic() - started < 10  # a few seconds, not the client's default minute of retries
    assert "KAFKA_BOOTSTRAP" in str(err.value) and settings.kafka_bootstrap in str(err.value)


@pytest.mark.kafka
def test_the_local_broker_starts_on_a_free_port_and_stops() -> None:
    from workers.broker import BrokerError, start_broker

    try:
        broker = start_broker()
    except BrokerError as exc:  # pragma: no cover - same policy as the session fixture
        from tests.support.services import missing

        missing("the Kafka-protocol broker", str(exc))
    with broker:
        assert broker.alive() and kafka_ready(broker.bootstrap)
        assert "tansu" in broker.log_tail()
    assert not broker.alive()
    host, port = broker.bootstrap.split(":")
    with socket.socket() as s:
        assert s.connect_ex((host, int(port))) != 0  # nothing listens any more


@pytest.mark.kafka
def test_a_producer_that_timed_out_is_replaced_and_the_next_publish_goes_through() -> None:
    """A broker that does not answer for longer than the delivery time-out (frozen here) fails the publish;
    the producer is dropped (kafka-python's idempotent producer could stay stuck after such an outage, see
    KafkaBus._discard_producer) and, once the broker answers, the next publish on a new one is delivered."""
    import os
    import signal

    from services.kernel.bus.kafka import KafkaBus
    from services.kernel.bus.port import Record, TopicSpec
    from workers.broker import BrokerError, start_broker

    try:
        broker = start_broker()
    except BrokerError as exc:  # pragma: no cover - same policy as the session fixture
        from tests.support.services import missing

        missing("the Kafka-protocol broker", str(exc))
    with broker:
        bus = KafkaBus(broker.bootstrap, request_timeout_ms=1000, connect_timeout_ms=1000)
        try:
            bus.ensure_topics([TopicSpec("replaced.producer", 1)])
            bus.publish([Record("replaced.producer", "k", b"before")])
            first = bus.producer
            os.kill(broker.process.pid, signal.SIGSTOP)
            try:
                with pytest.raises(Exception):  # noqa: B017, PT011 - a time-out, however kafka-python words it
                    bus.publish([Record("replaced.producer", "k", b"during")])
            finally:
                os.kill(broker.process.pid, signal.SIGCONT)
            assert bus._producer is None  # dropped, not kept for the next publish
            bus.publish([Record("replaced.producer", "k", b"after")])
            assert bus.producer is not first
            values = [r.value for r in bus.read("replaced.producer", 0, 0)]
            assert values[0] == b"before" and values[-1] == b"after"
        finally:
            bus.close()
