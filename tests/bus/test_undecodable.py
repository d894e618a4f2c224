"""Fix 6: a record whose key or headers the adapter cannot decode goes to the dead letters, and the good records
of the same batch are handled (before: the poll itself failed on it, every time, and the group stood still)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text

from services.kernel.bus.port import UNDECODABLE
from services.kernel.consumer import list_dead_letters
from services.kernel.db import UnitOfWork
from services.kernel.events import Event
from services.kernel.outbox import Relay

from .support import BusCase, count_effects, registered_parcel_event
from .test_reliability import consume_everything, runner_for

SERVICE = "weighing"


@pytest.fixture
def event(bus_case: BusCase) -> Iterator[type[Event]]:
    with registered_parcel_event(bus_case.prefix) as cls:
        yield cls


def _write_a_bad_record(case: BusCase, topic: str, good_value: bytes) -> None:
    """One record the adapter cannot decode, written the way a foreign producer (or a bit flip) would."""
    if case.kind == "kafka":
        from kafka import KafkaProducer

        p = KafkaProducer(bootstrap_servers=case.settings.kafka_bootstrap)
        p.send(
            topic, key=b"\xff\xfe-not-utf8", value=good_value, headers=[("ce_type", b"\xc3\x28")], partition=0
        ).get(timeout=10)
        p.close()
        return
    bus = case.bus
    with bus.db.engine.begin() as c:  # type: ignore[attr-defined]
        nxt = c.execute(
            text("SELECT next_offset FROM bus_partitions WHERE topic = :t AND partition = 0"), {"t": topic}
        ).scalar_one()
        c.execute(
            text(
                'INSERT INTO bus_log (topic, partition, "offset", key, value, headers, ts_ms) '
                "VALUES (:t, 0, :o, 'k', :v, '{not json', 0)"
            ),
            {"t": topic, "o": nxt, "v": good_value},
        )
        c.execute(
            text("UPDATE bus_partitions SET next_offset = :n WHERE topic = :t AND partition = 0"),
            {"t": topic, "n": nxt + 1},
        )


def test_an_undecodable_record_is_parked_and_the_good_ones_are_handled(bus_case: BusCase, event: type[Event]):
    topic = bus_case.topic("test.parcel", partitions=1)
    producer_db = bus_case.service_db(SERVICE)
    with UnitOfWork(producer_db) as uow:
        for i in range(3):
            uow.emit(event(parcel_id=f"parcel-{i}", weight_g=i))
    relay = Relay(producer_db, bus_case.bus, SERVICE)
    relay.relay_once()
    good_value = bus_case.bus.read(topic, 0, 0, 1)[0].value
    _write_a_bad_record(bus_case, topic, good_value)
    with UnitOfWork(producer_db) as uow:
        for i in range(3, 6):
            uow.emit(event(parcel_id=f"parcel-{i}", weight_g=i))
    relay.relay_once()

    consumer_db = bus_case.service_db("billing")
    runner = runner_for(bus_case, consumer_db, topic, event.type)
    consume_everything(bus_case, runner, topic, expected=7)
    assert count_effects(consumer_db) == (6, 6)  # every good record, before and after the bad one
    [parked] = list_dead_letters(bus_case.bus, runner.spec.group)
    assert "undecodable record" in parked.headers["dlq.error"]
    assert parked.headers[UNDECODABLE]
