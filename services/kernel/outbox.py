"""Transactional outbox, inbox and dead letters.

A unit of work writes its events into `outbox` in the same transaction as the state change; the relay ships
unsent rows in commit order and marks them sent. If the process dies between commit and publish, the rows are
still there and go out on the next pass. If it dies between publish and marking, they go out twice: consumers
record each handled event id in `inbox` in the same transaction as their effect, so the second copy does nothing.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    bindparam,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from .bus.port import EventBus, Record
from .db import Database, new_metadata
from .events import CONTENT_TYPE, Envelope, Event

log = logging.getLogger(__name__)

# Every service's database holds these two tables (each service's migrations create them).
kernel_metadata = new_metadata()

outbox_t = Table(
    "outbox",
    kernel_metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(200), nullable=False),
    Column("key", String(200), nullable=False),
    Column("type", String(200), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
)

inbox_t = Table(
    "inbox",
    kernel_metadata,
    Column("group_id", String(200), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("handled_at", DateTime(timezone=True), nullable=False),
)


def write_outbox(session: Session | Connection, events: Sequence[Event | Envelope]) -> list[str]:
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for ev in events:
        env = ev if isinstance(ev, Envelope) else Envelope.wrap(ev)
        from .events import topic_of

        rows.append(
            dict(
                event_id=env.id,
                topic=topic_of(env.type),
                key=env.subject,
                type=env.type,
                payload=env.to_bytes(),
                created_at=now,
                attempts=0,
            )
        )
    session.execute(outbox_t.insert(), rows)
    return [str(r["event_id"]) for r in rows]


def inbox_seen(session: Session, group: str, event_id: str) -> bool:
    return (
        session.execute(
            select(inbox_t.c.event_id).where(inbox_t.c.group_id == group, inbox_t.c.event_id == event_id)
        ).first()
        is not None
    )


def inbox_record(session: Session, group: str, event_id: str) -> None:
    session.execute(inbox_t.insert().values(group_id=group, event_id=event_id, handled_at=datetime.now(UTC)))


def inbox_seen_many(session: Session, group: str, event_ids: list[str]) -> set[str]:
    """Which of these event ids the group has handled (one query for a consumer's batch)."""
    seen: set[str] = set()
    for i in range(0, len(event_ids), 500):
        seen.update(
            session.execute(
                select(inbox_t.c.event_id).where(
                    inbox_t.c.group_id == group, inbox_t.c.event_id.in_(event_ids[i : i + 500])
                )
            ).scalars()
        )
    return seen


def inbox_record_many(session: Session, group: str, event_ids: list[str]) -> None:
    if event_ids:
        now = datetime.now(UTC)
        session.execute(
            inbox_t.insert(), [dict(group_id=group, event_id=e, handled_at=now) for e in event_ids]
        )


_UNSENT = (
    select(
        outbox_t.c.seq,
        outbox_t.c.topic,
        outbox_t.c.key,
        outbox_t.c.payload,
        outbox_t.c.event_id,
        outbox_t.c.type,
    )
    .where(outbox_t.c.sent_at.is_(None))
    .order_by(outbox_t.c.seq)
    .limit(bindparam("limit"))
)


_MARK_SENT = (
    update(outbox_t)
    .where(outbox_t.c.seq.in_(bindparam("seqs", expanding=True)))
    .values(sent_at=bindparam("now"))
)


class Relay:
    """Ships one service's outbox to the bus, in commit order, with retries and backoff."""

    def __init__(
        self,
        db: Database,
        bus: EventBus,
        service: str,
        batch_size: int = 500,
        idle_sleep_s: float = 0.05,
        max_backoff_s: float = 5.0,
    ):
        self.db = db
        self.bus = bus
        self.service = service
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        self.max_backoff_s = max_backoff_s
        # Fault injection for the crash test: SIGKILL this process right after publishing, before marking sent.
        self._fault = os.environ.get("RELAY_FAULT") == "kill_after_publish"

    def relay_once(self) -> int:
        with self.db.session(readonly=True) as s:
            rows = s.execute(_UNSENT, {"limit": self.batch_size}).all()
        if not rows:
            return 0
        # Positional unpacking: named access on 500 result rows per batch is a measurable share of the relay.
        # ce_type (CloudEvents binary-mode header) lets consumers skip types they do not handle without decoding.
        records = [
            Record(
                topic=topic,
                key=key,
                value=bytes(payload),
                headers={"content-type": CONTENT_TYPE, "ce_id": event_id, "ce_type": type_},
            )
            for _, topic, key, payload, event_id, type_ in rows
        ]
        seqs = [row[0] for row in rows]
        try:
            self.bus.publish(records)
        except Exception as exc:
            with self.db.session() as s, s.begin():
                s.execute(
                    update(outbox_t)
                    .where(outbox_t.c.seq.in_(seqs))
                    .values(attempts=outbox_t.c.attempts + 1, last_error=str(exc)[:2000])
                )
            raise
        if self._fault:
            os.kill(os.getpid(), signal.SIGKILL)
        with self.db.engine.begin() as conn:
            conn.execute(_MARK_SENT, {"seqs": seqs, "now": datetime.now(UTC)})
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        backoff = 0.1
        idle = self.idle_sleep_s
        with _single_relay(self.db, self.service, stop):
            while not stop.is_set():
                try:
                    n = self.relay_once()
                    backoff = 0.1
                    if n == 0:
                        # quiet: look less often (up to 4× the base interval) to leave the CPU to requests
                        stop.wait(idle)
                        idle = min(idle * 2, self.idle_sleep_s * 4)
                    else:
                        idle = self.idle_sleep_s
                        if n < self.batch_size:
                            stop.wait(self.idle_sleep_s)
                except Exception:
                    log.exception("outbox relay for %s failed; retrying in %.1fs", self.service, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff_s)

    def pending(self) -> int:
        with self.db.session(readonly=True) as s:
            return s.execute(
                select(text("count(*)")).select_from(outbox_t).where(outbox_t.c.sent_at.is_(None))
            ).scalar_one()


class _single_relay:
    """On PostgreSQL, an advisory lock keeps one active relay per service (order holds); others stand by."""

    def __init__(self, db: Database, service: str, stop: threading.Event):
        self.db, self.service, self.stop = db, service, stop
        self.conn: Connection | None = None

    def __enter__(self) -> None:
        if self.db.dialect != "postgresql":
            return
        self.conn = conn = self.db.engine.connect()
        while not self.stop.is_set():
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": f"relay:{self.service}"}
            ).scalar()
            conn.commit()
            if got:
                return
            self.stop.wait(1.0)

    def __exit__(self, *exc: object) -> None:
        if self.conn is not None:
            self.conn.close()


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Poll a condition (tests and CLIs); returns whether it became true in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
