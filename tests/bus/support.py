"""Helpers shared by the bus tests and their subprocesses (tests/bus/outbox_proc.py)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from services.kernel import events
from services.kernel.bus.port import EventBus, Record, Subscription, TopicSpec
from services.kernel.db import Database, ensure_schema
from services.kernel.events import Envelope, Event
from services.kernel.outbox import kernel_metadata
from services.kernel.settings import Settings

# The consuming service's own table: one row per handled event. No unique constraint on purpose — a second
# delivery that got past the inbox would show up here as a second row.
effects_metadata = MetaData()
effects_t = Table(
    "bus_test_parcels_received",
    effects_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("parcel_id", String(200), nullable=False),
)


def parcel_event(prefix: str) -> type[Event]:
    """A `parcel weighed` event on a topic of its own (tests share one Kafka broker, so each test gets its
    own topic and event type). Defining it registers it; tests take it from `registered_parcel_event`."""

    class ParcelWeighed(Event):
        type = f"cn.recycle.test.{prefix.rstrip('_')}.parcel.weighed.v1"
        topic = f"{prefix}test.parcel"
        key_field = "parcel_id"
        source = "/test/parcels"
        doc = "Test event: a parcel of scrap was weighed."

        parcel_id: str
        weight_g: int

    return ParcelWeighed


@contextlib.contextmanager
def registered_parcel_event(prefix: str) -> Iterator[type[Event]]:
    """The test event, registered for the test only: the event catalogue and its tests must never see it."""
    cls = parcel_event(prefix)
    try:
        yield cls
    finally:
        events._REGISTRY.pop(cls.type, None)


def open_service_db(settings: Settings, service: str) -> Database:
    """A service's database with the kernel tables (outbox, inbox) and the test effect table."""
    db = Database(settings.db_url(service), schema=settings.db_schema(service))
    ensure_schema(db.engine, db.schema)
    kernel_metadata.create_all(db.engine)
    effects_metadata.create_all(db.engine)
    return db


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that rebuilds `settings` in a subprocess (Settings reads the environment)."""
    env = dict(os.environ)
    for name in (
        "env",
        "data_dir",
        "database_url",
        "db_schema_prefix",
        "bus",
        "event_log_url",
        "event_log_partitions",
        "kafka_bootstrap",
        "kafka_session_timeout_ms",
        "kafka_heartbeat_interval_ms",
        "kafka_request_timeout_ms",
        "kafka_default_partitions",
    ):
        env[name.upper()] = str(getattr(settings, name))
    env.pop("RELAY_FAULT", None)
    return env


def count_effects(db: Database) -> tuple[int, int]:
    """(rows, distinct event ids) in the effect table."""
    with db.session(readonly=True) as s:
        rows = s.execute(select(func.count()).select_from(effects_t)).scalar_one()
        distinct = s.execute(select(func.count(func.distinct(effects_t.c.event_id)))).scalar_one()
    return rows, distinct


def record_effect(env: Envelope, uow) -> None:  # noqa: ANN001 - a consumer handler
    uow.session.execute(effects_t.insert().values(event_id=env.id, parcel_id=env.subject))


@dataclass
class BusCase:
    """One adapter under test, with unique topic and group names for this test."""

    kind: str
    bus: EventBus
    settings: Settings
    prefix: str
    _subs: list[Subscription] = field(default_factory=list)
    _dbs: list[Database] = field(default_factory=list)

    def topic(self, name: str, partitions: int = 4, retention_hours: int = 168) -> str:
        full = f"{self.prefix}{name}"
        self.bus.ensure_topics([TopicSpec(full, partitions, retention_hours)])
        return full

    def group(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def subscribe(self, group: str, topics: list[str]) -> Subscription:
        sub = self.bus.subscribe(group, topics)
        self._subs.append(sub)
        return sub

    def service_db(self, service: str) -> Database:
        db = open_service_db(self.settings, service)
        self._dbs.append(db)
        return db

    def close(self) -> None:
        for sub in self._subs:
            try:
                sub.close()
            except Exception:  # noqa: BLE001 - already closed by the test
                pass
        for db in self._dbs:
            db.dispose()
        self.bus.close()


def drain(sub: Subscription, count: int, timeout_s: float = 15.0, commit: bool = False) -> list[Record]:
    """Poll until `count` records arrived (or the time-out). Returns them in arrival order."""
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < count and time.monotonic() < deadline:
        batch = sub.poll(0.2)
        if commit:
            sub.commit(batch)
        out.extend(batch)
    return out


def records(topic: str, keys: list[str], round_: int = 0) -> list[Record]:
    return [
        Record(topic=topic, key=k, value=f"{k}|{round_}".encode(), headers={"round": str(round_)})
        for k in keys
    ]
