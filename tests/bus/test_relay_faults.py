"""The relay under faults. Fix 5: a row the bus refuses is parked after N attempts and does not block the
service's other rows; an outage is waited out and never counted. Fix 9: one relay per outbox on SQLite too, and
on PostgreSQL a relay that lost its lock notices and stands by."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from services.kernel.bus.port import EventBus, Record
from services.kernel.db import UnitOfWork
from services.kernel.events import Event
from services.kernel.outbox import Relay, RelayLock, wait_until

from .support import BusCase, registered_parcel_event

SERVICE = "weighing"


@pytest.fixture
def event(bus_case: BusCase) -> Iterator[type[Event]]:
    with registered_parcel_event(bus_case.prefix) as cls:
        yield cls


class RefusingBus:
    """The real bus, except that it refuses records of one key (as a broker refuses a record too large), or
    everything while `down` (an outage: the health probe fails too)."""

    def __init__(self, bus: EventBus, bad_key: str = "parcel-bad"):
        self.bus, self.bad_key, self.down = bus, bad_key, False

    def publish(self, records: list[Record]) -> None:
        if self.down:
            raise ConnectionError("broker unreachable")
        if any(r.key == self.bad_key for r in records):
            raise ValueError("MessageSizeTooLargeError: the record is larger than the broker accepts")
        self.bus.publish(records)

    def end_offsets(self, topic: str) -> dict[int, int]:
        if self.down:
            raise ConnectionError("broker unreachable")
        return self.bus.end_offsets(topic)


def _on_the_bus(case: BusCase, topic: str) -> list[str]:
    return [r.key for p in range(case.bus.partitions(topic)) for r in case.bus.read(topic, p, 0, 1000)]


def test_a_row_the_bus_refuses_is_parked_and_the_rest_go_out(bus_case: BusCase, event: type[Event]) -> None:
    topic = bus_case.topic("test.parcel")
    db = bus_case.service_db(SERVICE)
    with UnitOfWork(db) as uow:
        for i in range(6):
            uow.emit(event(parcel_id="parcel-bad" if i == 2 else f"parcel-{i}", weight_g=i))
    relay = Relay(db, RefusingBus(bus_case.bus), SERVICE, max_attempts=3)  # type: ignore[arg-type]
    for _ in range(3):
        with pytest.raises(ValueError):
            relay.relay_once()
    assert sorted(_on_the_bus(bus_case, topic)) == ["parcel-0", "parcel-1"]  # the rows before it went out
    [parked] = relay.parked()
    assert parked["key"] == "parcel-bad" and parked["attempts"] == 3
    assert "larger than the broker accepts" in parked["last_error"]
    assert relay.relay_once() == 3  # the rows after it are no longer blocked
    assert sorted(_on_the_bus(bus_case, topic)) == [
        "parcel-0",
        "parcel-1",
        "parcel-3",
        "parcel-4",
        "parcel-5",
    ]
    assert relay.pending() == 1
    # the operator fixes the cause and retries it: it goes out once
    assert relay.retry_parked() == 1
    Relay(db, bus_case.bus, SERVICE, max_attempts=3).relay_once()
    assert sorted(_on_the_bus(bus_case, topic)).count("parcel-bad") == 1 and relay.pending() == 0


def test_an_outage_is_waited_out_never_counted(bus_case: BusCase, event: type[Event]) -> None:
    topic = bus_case.topic("test.parcel")
    db = bus_case.service_db(SERVICE)
    with UnitOfWork(db) as uow:
        uow.emit(event(parcel_id="parcel-1", weight_g=1))
    bus = RefusingBus(bus_case.bus)
    bus.down = True
    relay = Relay(db, bus, SERVICE, max_attempts=2)  # type: ignore[arg-type]
    for _ in range(5):
        with pytest.raises(ConnectionError):
            relay.relay_once()
    assert relay.parked() == []
    bus.down = False
    assert relay.relay_once() == 1 and _on_the_bus(bus_case, topic) == ["parcel-1"]


def test_one_relay_per_outbox_on_sqlite(tmp_path) -> None:
    """Two relays started on one SQLite outbox (e.g. `recycle serve` and `recycle background` side by side):
    one relays, the other stands by, and every row goes out once."""
    from services.kernel.bus.factory import make_bus
    from services.kernel.settings import Settings

    from .support import open_service_db

    settings = Settings(env="test", data_dir=tmp_path, bus="dblog", event_log_partitions=2)
    bus = make_bus(settings)
    with registered_parcel_event("solo_") as cls:
        db = open_service_db(settings, SERVICE)
        bus.ensure_topics([])
        with UnitOfWork(db) as uow:
            for i in range(2000):
                uow.emit(cls(parcel_id=f"parcel-{i}", weight_g=i))
        relays = [Relay(db, bus, SERVICE, batch_size=50, idle_sleep_s=0.01) for _ in range(2)]
        stop = threading.Event()
        threads = [threading.Thread(target=r.run, args=(stop,)) for r in relays]
        for t in threads:
            t.start()
        try:
            assert wait_until(lambda: relays[0].pending() == 0, 30, 0.05)
            assert sorted(r.active for r in relays) == [False, True]
        finally:
            stop.set()
            for t in threads:
                t.join(10)
        keys = _keys(bus, cls.topic)
        assert len(keys) == 2000 and len(set(keys)) == 2000
        bus.close()
        db.dispose()


def _keys(bus: EventBus, topic: str) -> list[str]:
    out = []
    for p in range(bus.partitions(topic)):
        offset = 0
        while batch := bus.read(topic, p, offset, 500):
            out += [r.key for r in batch]
            offset = batch[-1].offset + 1
    return out


@pytest.mark.postgres
def test_a_relay_that_lost_its_postgres_lock_notices_and_stands_by(pg_settings) -> None:
    from services.kernel.db import Database

    db = Database(pg_settings.db_url(SERVICE), schema=pg_settings.db_schema(SERVICE))
    a, b = RelayLock(db, SERVICE), RelayLock(db, SERVICE)
    stop = threading.Event()
    try:
        assert a.acquire(stop) and a.still_held()
        assert not b._try()
        pid = a.conn.execute(text("SELECT pg_backend_pid()")).scalar()
        a.conn.commit()
        with db.engine.connect() as c:  # the server drops a's session (a restart, an operator, a fail-over)
            c.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            c.commit()
        assert not a.still_held()
        assert b._try() and b.still_held()  # the stand-by takes over
    finally:
        a.release()
        b.release()
        db.dispose()
