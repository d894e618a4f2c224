"""Fix 4: a replay pages through every parked record of a group (not the first 1,000) and records which were
replayed, so a second replay sends nothing twice unless asked to."""

from __future__ import annotations

from services.kernel.bus.port import Record, TopicSpec
from services.kernel.consumer import (
    dlq_topic,
    list_dead_letters,
    replay_dead_letters,
    replayed_dead_letters,
)

from .support import BusCase

PARKED = 1_234


def _park(bus_case: BusCase, group: str, original: str, n: int) -> None:
    dlq = dlq_topic(group)
    bus_case.bus.ensure_topics([TopicSpec(dlq, 2)])
    bus_case.bus.publish(
        [
            Record(
                topic=dlq,
                key=f"parcel-{i}",
                value=b'{"n": %d}' % i,
                headers={
                    "dlq.original_topic": original,
                    "dlq.original_partition": "0",
                    "dlq.original_offset": str(i),
                    "dlq.error": "ValueError: boom",
                    "dlq.attempts": "5",
                },
            )
            for i in range(n)
        ]
    )


def _on(bus_case: BusCase, topic: str) -> int:
    return sum(bus_case.bus.end_offsets(topic).values())


def test_replay_sends_back_every_parked_record_once_and_records_it(bus_case: BusCase) -> None:
    group = bus_case.group("billing")
    original = bus_case.topic("test.parcel", partitions=2)
    _park(bus_case, group, original, PARKED)
    assert len(list_dead_letters(bus_case.bus, group)) == PARKED

    assert replay_dead_letters(bus_case.bus, group) == PARKED
    assert _on(bus_case, original) == PARKED
    assert len(replayed_dead_letters(bus_case.bus, group)) == PARKED
    sent_back = {r.key for p in range(2) for r in bus_case.bus.read(original, p, 0, 5000)}
    assert sent_back == {f"parcel-{i}" for i in range(PARKED)}

    assert replay_dead_letters(bus_case.bus, group) == 0  # nothing new parked: nothing sent
    assert _on(bus_case, original) == PARKED
    _park(bus_case, group, original, 3)  # three more fail later
    assert replay_dead_letters(bus_case.bus, group) == 3
    assert replay_dead_letters(bus_case.bus, group, again=True) == PARKED + 3
