"""The event-bus contract: one suite, run against every adapter (embedded log on SQLite and PostgreSQL, Kafka).

Each test names the Kafka semantic it pins down; an adapter that passes them all can replace another by
configuration alone.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

from kafka.partitioner.default import murmur2

from services.kernel.bus.port import Record, partition_for

from .support import BusCase, drain, records

KEYS = [f"pickup-{i}" for i in range(24)]


def expected_partition(kind: str, key: str, partitions: int) -> int:
    """Where a key lands: CRC32 in the embedded log, murmur2 (Kafka's default partitioner) on Kafka.
    The numbers differ between adapters; what both promise is one key → one partition."""
    if kind == "kafka":
        return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions
    return partition_for(key, partitions)


def by_partition(recs: list[Record]) -> dict[int, list[Record]]:
    out: dict[int, list[Record]] = defaultdict(list)
    for r in recs:
        out[r.partition].append(r)
    return out


def test_per_key_order_holds_across_publishes(bus_case: BusCase) -> None:
    topic = bus_case.topic("order")
    for round_ in range(5):
        bus_case.bus.publish(records(topic, KEYS, round_))
    got = drain(bus_case.subscribe(bus_case.group("g"), [topic]), 5 * len(KEYS))
    assert len(got) == 5 * len(KEYS)
    rounds: dict[str, list[int]] = defaultdict(list)
    for r in got:
        rounds[r.key].append(int(r.value.decode().split("|")[1]))
    assert all(seq == [0, 1, 2, 3, 4] for seq in rounds.values()), rounds
    # offsets are dense and increasing within each partition
    for part, recs in by_partition(got).items():
        assert [r.offset for r in recs] == list(range(len(recs))), part


def test_a_key_always_lands_on_one_partition_and_keys_spread(bus_case: BusCase) -> None:
    topic = bus_case.topic("spread", partitions=4)
    bus_case.bus.publish(records(topic, KEYS, 0))
    bus_case.bus.publish(records(topic, KEYS, 1))
    got = drain(bus_case.subscribe(bus_case.group("g"), [topic]), 2 * len(KEYS))
    where: dict[str, set[int]] = defaultdict(set)
    for r in got:
        where[r.key].add(r.partition)
    assert all(len(parts) == 1 for parts in where.values())
    assert {k: p.pop() for k, p in where.items()} == {
        k: expected_partition(bus_case.kind, k, 4) for k in KEYS
    }
    assert len({expected_partition(bus_case.kind, k, 4) for k in KEYS}) == 4
    assert bus_case.bus.partitions(topic) == 4


def test_an_explicit_partition_is_respected(bus_case: BusCase) -> None:
    topic = bus_case.topic("explicit", partitions=3)
    bus_case.bus.publish([Record(topic=topic, key="any", value=b"x", partition=2)])
    assert bus_case.bus.end_offsets(topic) == {0: 0, 1: 0, 2: 1}


def test_keys_values_and_headers_round_trip(bus_case: BusCase) -> None:
    topic = bus_case.topic("roundtrip", partitions=1)
    sent = Record(
        topic=topic,
        key="回收站-朝阳-001",
        value=bytes(range(256)) + "称重 12.5 kg".encode(),
        headers={"ce_id": "ev_1", "trace": "废纸/黄纸板"},
        timestamp_ms=1_700_000_000_000,
    )
    bus_case.bus.publish([sent])
    [got] = drain(bus_case.subscribe(bus_case.group("g"), [topic]), 1)
    assert (got.key, got.value, got.headers, got.timestamp_ms) == (
        sent.key,
        sent.value,
        sent.headers,
        sent.timestamp_ms,
    )
    assert (got.topic, got.partition, got.offset) == (topic, 0, 0)
    bus_case.bus.publish([])  # nothing to do, no error
    assert bus_case.bus.end_offsets(topic) == {0: 1}


def test_a_group_resumes_after_its_committed_offsets(bus_case: BusCase) -> None:
    topic = bus_case.topic("resume")
    bus_case.bus.publish(records(topic, KEYS, 0) + records(topic, KEYS, 1))
    group = bus_case.group("g")
    first = bus_case.subscribe(group, [topic])
    got = drain(first, 2 * len(KEYS))
    assert len(got) == 2 * len(KEYS)
    handled = [r for r in got if r.offset < 3]  # the first three records of each partition
    first.commit(handled)
    first.close()

    second = bus_case.subscribe(group, [topic])
    expected = {(r.partition, r.offset) for r in got if r.offset >= 3}
    rest = drain(second, len(expected))
    assert {(r.partition, r.offset) for r in rest} == expected
    assert second.poll(0.3) == []


def test_uncommitted_records_come_again(bus_case: BusCase) -> None:
    """At-least-once: a member that dies before committing leaves its records to the next one."""
    topic = bus_case.topic("redeliver")
    bus_case.bus.publish(records(topic, KEYS))
    group = bus_case.group("g")
    first = bus_case.subscribe(group, [topic])
    assert len(drain(first, len(KEYS))) == len(KEYS)
    first.close()
    again = drain(bus_case.subscribe(group, [topic]), len(KEYS))
    assert sorted(r.key for r in again) == sorted(KEYS)


def test_two_groups_each_get_everything(bus_case: BusCase) -> None:
    topic = bus_case.topic("fanout")
    bus_case.bus.publish(records(topic, KEYS))
    billing = bus_case.subscribe(bus_case.group("billing"), [topic])
    pricing = bus_case.subscribe(bus_case.group("pricing"), [topic])
    a = drain(billing, len(KEYS), commit=True)
    b = drain(pricing, len(KEYS), commit=True)
    assert sorted(r.key for r in a) == sorted(r.key for r in b) == sorted(KEYS)


def test_seek_replays_a_partition(bus_case: BusCase) -> None:
    topic = bus_case.topic("replay", partitions=2)
    keys = [f"lot-{i}" for i in range(10)]
    bus_case.bus.publish(records(topic, keys))
    sub = bus_case.subscribe(bus_case.group("g"), [topic])
    got = drain(sub, len(keys), commit=True)
    parts = by_partition(got)
    part = max(parts, key=lambda p: len(parts[p]))
    assert len(parts[part]) >= 3

    sub.seek(topic, part, 1)
    replayed = drain(sub, len(parts[part]) - 1)
    assert [(r.partition, r.offset, r.key) for r in replayed] == [
        (r.partition, r.offset, r.key) for r in parts[part][1:]
    ]
    assert sub.poll(0.3) == []


def test_seek_before_the_first_poll(bus_case: BusCase) -> None:
    """An operator replays from an offset with a fresh member: the seek waits for the partition's assignment."""
    topic = bus_case.topic("early-seek", partitions=1)
    bus_case.bus.publish(records(topic, [f"k{i}" for i in range(6)]))
    sub = bus_case.subscribe(bus_case.group("g"), [topic])
    sub.seek(topic, 0, 4)
    got = drain(sub, 2)
    assert [r.offset for r in got] == [4, 5]


def test_read_inspects_without_a_group(bus_case: BusCase) -> None:
    topic = bus_case.topic("inspect", partitions=1)
    for round_ in range(3):  # several batches: reads must cross batch boundaries
        bus_case.bus.publish(records(topic, [f"k{i}" for i in range(7)], round_))
    bus = bus_case.bus
    everything = bus.read(topic, 0, 0, 1000)
    assert [r.offset for r in everything] == list(range(21))
    assert everything[8].value == b"k1|1" and everything[8].headers == {"round": "1"}
    assert [r.offset for r in bus.read(topic, 0, 9, 5)] == [9, 10, 11, 12, 13]
    assert [r.offset for r in bus.read(topic, 0, 19)] == [19, 20]
    assert bus.read(topic, 0, 21) == []
    assert bus.read(topic, 0, 50) == []
    # reading moved no group: a group still starts at the beginning
    assert len(drain(bus_case.subscribe(bus_case.group("g"), [topic]), 21)) == 21


def test_end_offsets(bus_case: BusCase) -> None:
    topic = bus_case.topic("ends", partitions=4)
    bus = bus_case.bus
    assert bus.end_offsets(topic) == {0: 0, 1: 0, 2: 0, 3: 0}
    for round_ in range(3):  # multi-record batches per partition
        bus.publish(records(topic, KEYS, round_))
    ends = bus.end_offsets(topic)
    counts = {p: len(bus.read(topic, p, 0, 1000)) for p in range(4)}
    assert ends == counts
    assert sum(ends.values()) == 3 * len(KEYS)
    bus.publish(records(topic, KEYS[:1], 9))
    part = expected_partition(bus_case.kind, KEYS[0], 4)
    assert bus.end_offsets(topic)[part] == counts[part] + 1


def test_two_members_of_a_group_split_the_partitions(bus_case: BusCase) -> None:
    topic = bus_case.topic("split", partitions=4)
    group = bus_case.group("g")
    a = bus_case.subscribe(group, [topic])
    b = bus_case.subscribe(group, [topic])
    keys = [f"job-{i}" for i in range(40)]
    deadline = time.monotonic() + 20
    round_ = 0
    split = None
    while split is None and time.monotonic() < deadline:
        # Publish a round, let both members take what the group gives them, until a round comes out split.
        # (A join or rebalance may redeliver a few records meanwhile: at-least-once.)
        bus_case.bus.publish(records(topic, keys, round_))
        seen: dict[str, set[int]] = {"a": set(), "b": set()}
        received: set[str] = set()
        until = time.monotonic() + 5
        while received != set(keys) and time.monotonic() < until:
            for name, sub in (("a", a), ("b", b)):
                batch = sub.poll(0.05)
                sub.commit(batch)
                for r in batch:
                    if r.value.decode().endswith(f"|{round_}"):
                        seen[name].add(r.partition)
                        received.add(r.key)
        if received == set(keys) and seen["a"] and seen["b"] and not seen["a"] & seen["b"]:
            split = seen
        round_ += 1
    assert split is not None, "the two members never split the partitions"
    assert split["a"] | split["b"] == {0, 1, 2, 3}


def test_concurrent_publishers_share_one_bus(bus_case: BusCase) -> None:
    """Service threads share one bus (one Kafka producer, one log engine): nothing lost, per-key order kept."""
    topic = bus_case.topic("threads")
    errors: list[BaseException] = []

    def publisher(t: int) -> None:
        try:
            for round_ in range(10):
                bus_case.bus.publish(records(topic, [f"t{t}-k{i}" for i in range(5)], round_))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    got = drain(bus_case.subscribe(bus_case.group("g"), [topic]), 4 * 5 * 10)
    assert len(got) == 200
    rounds: dict[str, list[int]] = defaultdict(list)
    for r in got:
        rounds[r.key].append(int(r.value.decode().split("|")[1]))
    assert len(rounds) == 20 and all(seq == list(range(10)) for seq in rounds.values())
