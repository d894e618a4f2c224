"""What only the embedded log does itself (Kafka leaves these to the broker): retention, group liveness,
and how it shares one SQLite file between readers and writers."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from services.kernel.bus.dblog import DbLogBus
from services.kernel.bus.port import Record

from .support import BusCase, drain, records


def test_retention_removes_old_records_and_keeps_offsets(dblog_case: BusCase) -> None:
    bus: DbLogBus = dblog_case.bus  # type: ignore[assignment]
    topic = dblog_case.topic("retained", partitions=1, retention_hours=1)
    keep_forever = dblog_case.topic("kept", partitions=1, retention_hours=24 * 365)
    two_hours_ago = int(time.time() * 1000) - 2 * 3_600_000
    bus.publish(
        [Record(topic=topic, key="k", value=f"old{i}".encode(), timestamp_ms=two_hours_ago) for i in range(3)]
    )
    bus.publish([Record(topic=topic, key="k", value=b"new")])
    bus.publish([Record(topic=keep_forever, key="k", value=b"old", timestamp_ms=two_hours_ago)])

    assert bus.apply_retention() == 3
    assert [(r.offset, r.value) for r in bus.read(topic, 0, 0)] == [(3, b"new")]
    assert bus.end_offsets(topic) == {0: 4}  # offsets never restart
    assert len(bus.read(keep_forever, 0, 0)) == 1
    # a new group starts at the oldest record kept
    assert [r.offset for r in drain(dblog_case.subscribe(dblog_case.group("late"), [topic]), 1)] == [3]
    bus.publish([Record(topic=topic, key="k", value=b"newer")])
    assert bus.end_offsets(topic) == {0: 5}


def test_a_silent_member_loses_its_partitions(dblog_case: BusCase) -> None:
    """A member that stops heartbeating (a crashed process) is dropped after the session time-out, and the
    live member takes its partitions from the group's committed offsets."""
    bus: DbLogBus = dblog_case.bus  # type: ignore[assignment]
    bus.session_timeout_ms = 400
    topic = dblog_case.topic("liveness", partitions=4)
    group = dblog_case.group("g")
    alive = dblog_case.subscribe(group, [topic])
    crashed = dblog_case.subscribe(group, [topic])
    alive.poll(0.01)
    crashed.poll(0.01)  # joins; then never polls (nor closes) again
    time.sleep(0.15)
    keys = [f"k{i}" for i in range(40)]
    bus.publish(records(topic, keys))
    got = drain(alive, len(keys), timeout_s=5, commit=True)
    assert sorted(r.key for r in got) == sorted(keys)
    assert {r.partition for r in got} == {0, 1, 2, 3}


@pytest.fixture
def sqlite_bus(tmp_path) -> DbLogBus:  # noqa: ANN001
    bus = DbLogBus(f"sqlite:///{tmp_path}/eventlog.db", default_partitions=2)
    yield bus
    bus.close()


def test_readers_do_not_wait_for_a_writer(sqlite_bus: DbLogBus, tmp_path) -> None:  # noqa: ANN001
    """Regression: reads used to open write transactions (BEGIN IMMEDIATE), so every poll queued behind every
    publish and a long write stalled all consumers for up to the 30 s busy time-out."""
    sqlite_bus.publish([Record(topic="t", key="k", value=b"v")])
    sub = sqlite_bus.subscribe("g", ["t"])
    sub.poll(0.01)  # joined (its heartbeat writes)
    sub.seek("t", 0, 0)
    sub.seek("t", 1, 0)
    writer = sqlite3.connect(f"{tmp_path}/eventlog.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process in the middle of a long write
    try:
        out: dict[str, object] = {}

        def readers() -> None:
            out["read"] = [r for p in range(2) for r in sqlite_bus.read("t", p, 0)]
            out["ends"] = sqlite_bus.end_offsets("t")
            out["poll"] = sub.poll(0.01)

        th = threading.Thread(target=readers, daemon=True)
        th.start()
        th.join(3)
        assert not th.is_alive(), "reads waited for the writer's lock"
        assert len(out["read"]) == 1 and sum(out["ends"].values()) == 1 and len(out["poll"]) == 1
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_backlog_in_one_partition_does_not_starve_the_others(sqlite_bus: DbLogBus) -> None:
    sqlite_bus.publish([Record(topic="t", key="x", value=b"backlog", partition=0) for _ in range(2000)])
    sqlite_bus.publish([Record(topic="t", key="y", value=b"urgent", partition=1)])
    sub = sqlite_bus.subscribe("g", ["t"])
    first_polls = [r for _ in range(3) for r in sub.poll(0.01, max_records=100)]
    assert any(r.value == b"urgent" for r in first_polls)


def test_an_explicit_partition_on_a_new_topic(sqlite_bus: DbLogBus) -> None:
    """Regression: a record with an explicit partition skipped the topic's auto-creation and failed with
    NoResultFound; a partition the topic does not have is refused with a clear error."""
    sqlite_bus.publish([Record(topic="fresh", key="k", value=b"v", partition=1)])
    assert sqlite_bus.end_offsets("fresh") == {0: 0, 1: 1}
    with pytest.raises(ValueError, match="has 2 partitions"):
        sqlite_bus.publish([Record(topic="fresh", key="k", value=b"v", partition=2)])
