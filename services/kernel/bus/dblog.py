"""The embedded event bus: a durable log in a database with Kafka's semantics.

- topics with a fixed number of partitions; a record goes to `partition_for(key)`, so per-key order holds;
- offsets are dense per partition, assigned under the partition row's lock (UPDATE ... RETURNING);
- consumer groups: members heartbeat into `bus_group_members`; the live members split a topic's partitions
  round-robin in member-id order (a rebalance may hand a partition over mid-batch: delivery is at-least-once,
  as with Kafka, and consumers dedupe by event id);
- committed offsets per group and partition; `seek` replays from any offset; `read` inspects without a group;
- retention deletes records older than the topic's retention (offsets never restart).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..db import Database, check_reachable, ensure_schema
from ..ids import new_id
from .port import UNDECODABLE, Record, TopicSpec, partition_for

metadata = MetaData()

topics_t = Table(
    "bus_topics",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("partitions", Integer, nullable=False),
    Column("retention_hours", Integer, nullable=False),
)
partitions_t = Table(
    "bus_partitions",
    metadata,
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("next_offset", BigInteger, nullable=False),
)
log_t = Table(
    "bus_log",
    metadata,
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("offset", BigInteger, primary_key=True),
    Column("key", String(200), nullable=False),
    Column("value", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
)
group_offsets_t = Table(
    "bus_group_offsets",
    metadata,
    Column("group_id", String(200), primary_key=True),
    Column("topic", String(200), primary_key=True),
    Column("partition", Integer, primary_key=True),
    Column("committed", BigInteger, nullable=False),
)
members_t = Table(
    "bus_group_members",
    metadata,
    Column("group_id", String(200), primary_key=True),
    Column("member_id", String(200), primary_key=True),
    Column("heartbeat_ms", BigInteger, nullable=False),
)


# Statements on the hot paths, built once (building one per call costs more than the database running it).
_ADVANCE = (
    update(partitions_t)
    .where(and_(partitions_t.c.topic == bindparam("t"), partitions_t.c.partition == bindparam("p")))
    .values(next_offset=partitions_t.c.next_offset + bindparam("n"))
    .returning(partitions_t.c.next_offset)
)
_APPEND = insert(log_t)
_READ = (
    select(log_t)
    .where(
        and_(
            log_t.c.topic == bindparam("t"),
            log_t.c.partition == bindparam("p"),
            log_t.c.offset >= bindparam("o"),
        )
    )
    .order_by(log_t.c.offset)
    .limit(bindparam("n"))
)
_ENDS = select(partitions_t.c.topic, partitions_t.c.partition, partitions_t.c.next_offset).where(
    partitions_t.c.topic.in_(bindparam("topics", expanding=True))
)


def _commit_statement(dialect: str) -> Any:
    ins = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = ins(group_offsets_t).values(
        group_id=bindparam("g"), topic=bindparam("t"), partition=bindparam("p"), committed=bindparam("o")
    )
    return stmt.on_conflict_do_update(
        index_elements=["group_id", "topic", "partition"], set_={"committed": stmt.excluded.committed}
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class UnknownTopic(KeyError):
    pass


class DbLogBus:
    def __init__(
        self,
        url: str,
        default_partitions: int = 4,
        retention_hours: int = 168,
        session_timeout_ms: int = 10_000,
        poll_interval_s: float = 0.02,
        schema: str = "eventlog",
        max_idle_sleep_s: float = 0.2,
    ):
        self.db = Database(url, schema=schema, pool_size=5)
        check_reachable(self.db.engine, "event log (EVENT_LOG_URL)")
        ensure_schema(self.db.engine, self.db.schema)
        metadata.create_all(self.db.engine)
        # Reads run in read-only transactions: on SQLite a plain BEGIN (WAL readers never wait for a writer),
        # not the BEGIN IMMEDIATE of write transactions, which would queue every poll behind every publish.
        self._reader = self.db.engine.execution_options(readonly=True)
        self.default_partitions = default_partitions
        self.retention_hours = retention_hours
        self.session_timeout_ms = session_timeout_ms
        self.poll_interval_s = poll_interval_s
        self.max_idle_sleep_s = max_idle_sleep_s
        self._parts: dict[str, int] = {}
        self._lock = threading.Lock()
        self.commit_offsets = _commit_statement(self.db.dialect)

    # --- topics ---------------------------------------------------------------------------
    def ensure_topics(self, specs: list[TopicSpec]) -> None:
        ins = pg_insert if self.db.dialect == "postgresql" else sqlite_insert
        with self.db.engine.begin() as conn:
            for s in specs:
                conn.execute(
                    ins(topics_t)
                    .values(name=s.name, partitions=s.partitions, retention_hours=s.retention_hours)
                    # a topic's retention follows its declaration (e.g. DLQ_RETENTION_HOURS raised later)
                    .on_conflict_do_update(
                        index_elements=["name"], set_={"retention_hours": s.retention_hours}
                    )
                )
                for p in range(s.partitions):
                    conn.execute(
                        ins(partitions_t)
                        .values(topic=s.name, partition=p, next_offset=0)
                        .on_conflict_do_nothing()
                    )
        self._parts.clear()

    def partitions(self, topic: str) -> int:
        n = self._parts.get(topic)
        if n is None:
            with self._reader.connect() as conn:
                n = conn.execute(select(topics_t.c.partitions).where(topics_t.c.name == topic)).scalar()
            if n is None:
                # Like Kafka's auto-create: an unknown topic gets the default layout on first use.
                self.ensure_topics([TopicSpec(topic, self.default_partitions, self.retention_hours)])
                n = self.default_partitions
            self._parts[topic] = n
        return n

    def end_offsets(self, topic: str) -> dict[int, int]:
        with self._reader.connect() as conn:
            rows = conn.execute(
                select(partitions_t.c.partition, partitions_t.c.next_offset).where(
                    partitions_t.c.topic == topic
                )
            ).all()
        return {p: o for p, o in rows}

    # --- produce --------------------------------------------------------------------------
    def publish(self, records: list[Record]) -> None:
        if not records:
            return
        grouped: dict[tuple[str, int], list[Record]] = defaultdict(list)
        for r in records:
            n = self.partitions(r.topic)  # also creates an unknown topic, as for keyed records
            if r.partition >= n:
                raise ValueError(f"topic {r.topic} has {n} partitions, no partition {r.partition}")
            p = r.partition if r.partition >= 0 else partition_for(r.key, n)
            grouped[(r.topic, p)].append(r)
        now = _now_ms()
        rows = []
        with self.db.engine.begin() as conn:
            # Lock partitions in a fixed order so two publishers never deadlock.
            for topic, part in sorted(grouped):
                batch = grouped[(topic, part)]
                end = conn.execute(_ADVANCE, {"t": topic, "p": part, "n": len(batch)}).scalar_one()
                base = end - len(batch)
                for i, r in enumerate(batch):
                    rows.append(
                        dict(
                            topic=topic,
                            partition=part,
                            offset=base + i,
                            key=r.key,
                            value=r.value,
                            headers=json.dumps(r.headers),
                            ts_ms=r.timestamp_ms or now,
                        )
                    )
            conn.execute(_APPEND, rows)

    # --- consume --------------------------------------------------------------------------
    def subscribe(self, group: str, topics: list[str]) -> DbLogSubscription:
        return DbLogSubscription(self, group, topics)

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        with self._reader.connect() as conn:
            rows = conn.execute(_READ, {"t": topic, "p": partition, "o": offset, "n": max_records}).all()
        return [_record(r) for r in rows]

    def apply_retention(self) -> int:
        """Delete records past their topic's retention. Returns how many were removed."""
        removed = 0
        now = _now_ms()
        with self.db.engine.begin() as conn:
            for name, hours in conn.execute(select(topics_t.c.name, topics_t.c.retention_hours)).all():
                res = conn.execute(
                    delete(log_t).where(and_(log_t.c.topic == name, log_t.c.ts_ms < now - hours * 3_600_000))
                )
                removed += res.rowcount or 0
        return removed

    def close(self) -> None:
        self.db.dispose()


def _record(r: Any) -> Record:  # a row of the log
    """A log row as the port's Record; headers that are not the log's JSON object of strings, or a key that is not
    text, mark the record UNDECODABLE (consumers park it) instead of failing the poll."""
    key = r.key
    headers: Any
    try:
        headers = json.loads(r.headers)
    except (TypeError, ValueError) as exc:
        headers = {UNDECODABLE: f"headers are not JSON: {exc}"}
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        headers = {UNDECODABLE: "headers are not an object of strings"}
    if not isinstance(key, str):
        key = bytes(key).decode(errors="replace") if key is not None else ""
        headers[UNDECODABLE] = "key is not text"
    return Record(
        topic=r.topic,
        key=key,
        value=bytes(r.value),
        headers=headers,
        partition=r.partition,
        offset=r.offset,
        timestamp_ms=r.ts_ms,
    )


class DbLogSubscription:
    def __init__(self, bus: DbLogBus, group: str, topics: list[str]):
        self.bus = bus
        self.group = group
        self.topics = topics
        self.member_id = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-8:]}"
        self._positions: dict[tuple[str, int], int] = {}
        self._assigned: list[tuple[str, int]] = []
        self._last_heartbeat = 0
        self._next_start = 0
        self._closed = False

    def _heartbeat_and_assign(self) -> None:
        now = _now_ms()
        if now - self._last_heartbeat < self.bus.session_timeout_ms / 4:
            return
        db = self.bus.db
        ins = pg_insert if db.dialect == "postgresql" else sqlite_insert
        with db.engine.begin() as conn:
            stmt = ins(members_t).values(group_id=self.group, member_id=self.member_id, heartbeat_ms=now)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["group_id", "member_id"], set_={"heartbeat_ms": now}
                )
            )
            conn.execute(
                delete(members_t).where(
                    and_(
                        members_t.c.group_id == self.group,
                        members_t.c.heartbeat_ms < now - self.bus.session_timeout_ms,
                    )
                )
            )
            members = sorted(
                conn.execute(
                    select(members_t.c.member_id).where(members_t.c.group_id == self.group)
                ).scalars()
            )
            committed = dict(
                ((t, p), o)
                for t, p, o in conn.execute(
                    select(
                        group_offsets_t.c.topic, group_offsets_t.c.partition, group_offsets_t.c.committed
                    ).where(group_offsets_t.c.group_id == self.group)
                ).all()
            )
        self._last_heartbeat = now
        me = members.index(self.member_id)
        assigned = []
        for topic in self.topics:
            for p in range(self.bus.partitions(topic)):
                if p % len(members) == me:
                    assigned.append((topic, p))
        for tp in assigned:
            if tp not in self._assigned:  # newly assigned: resume from the group's committed offset
                self._positions[tp] = committed.get(tp, 0)
        for tp in list(self._positions):
            if tp not in assigned:
                del self._positions[tp]
        self._assigned = assigned

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Record]:
        deadline = time.monotonic() + timeout_s
        idle_sleep = self.bus.poll_interval_s
        while True:
            self._heartbeat_and_assign()
            out: list[Record] = []
            # Start at a different partition each poll: a backlog in one partition must not starve the others.
            n = len(self._assigned)
            order = [self._assigned[(self._next_start + i) % n] for i in range(n)]
            self._next_start = (self._next_start + 1) % max(n, 1)
            with self.bus._reader.connect() as conn:
                # One cheap look at the partitions' ends first: an idle group costs one query per poll, not one
                # per partition.
                ends = dict(((t, p), o) for t, p, o in conn.execute(_ENDS, {"topics": self.topics}).all())
                for tp in order:
                    if len(out) >= max_records:
                        break
                    pos = self._positions[tp]
                    if ends.get(tp, 0) <= pos:
                        continue
                    rows = conn.execute(
                        _READ, {"t": tp[0], "p": tp[1], "o": pos, "n": max_records - len(out)}
                    ).all()
                    if rows:
                        self._positions[tp] = rows[-1].offset + 1
                        out.extend(_record(r) for r in rows)
            remaining = deadline - time.monotonic()
            if out or remaining <= 0 or self._closed:
                return out
            # Back off while idle (up to max_idle_sleep_s) so quiet consumers leave the CPU to request handlers.
            time.sleep(min(idle_sleep, remaining))
            idle_sleep = min(idle_sleep * 2, self.bus.max_idle_sleep_s)

    def commit(self, records: list[Record]) -> None:
        if not records:
            return
        last: dict[tuple[str, int], int] = {}
        for r in records:
            last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset + 1)
        with self.bus.db.engine.begin() as conn:
            conn.execute(
                self.bus.commit_offsets,
                [{"g": self.group, "t": topic, "p": part, "o": off} for (topic, part), off in last.items()],
            )

    def seek(self, topic: str, partition: int, offset: int) -> None:
        self._heartbeat_and_assign()
        self._positions[(topic, partition)] = offset

    def close(self) -> None:
        self._closed = True
        with self.bus.db.engine.begin() as conn:
            conn.execute(
                delete(members_t).where(
                    and_(members_t.c.group_id == self.group, members_t.c.member_id == self.member_id)
                )
            )
