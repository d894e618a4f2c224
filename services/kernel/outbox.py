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
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session

from .bus.port import EventBus, Record
from .db import Database, Timestamp, new_metadata
from .events import CONTENT_TYPE, Envelope, Event

log = logging.getLogger(__name__)

# Every service's database holds these tables (each service's migrations create them, services/kernel/migrations.py).
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
    Column("created_at", Timestamp(), nullable=False),
    Column("sent_at", Timestamp(), nullable=True, index=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
)

inbox_t = Table(
    "inbox",
    kernel_metadata,
    Column("group_id", String(200), primary_key=True),
    Column("event_id", String(64), primary_key=True),
    Column("handled_at", Timestamp(), nullable=False),
)


# The Idempotency-Key of each request whose work committed, written in the work's own transaction, and its reply
# once known (services/kernel/idempotency.py).
idempotency_keys_t = Table(
    "idempotency_keys",
    kernel_metadata,
    Column("scope", String(200), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(10), nullable=False),  # committed | replied | lost
    Column("status", Integer, nullable=True),
    Column("headers", Text, nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("created_at", Timestamp(), nullable=False, index=True),
    # what the request made (the id its reply is about), written with the key: a lost reply is rebuilt from it
    Column("made", String(200), nullable=True),
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


def publish_again(session: Session | Connection, envelope: Envelope) -> str:
    """Announce an event again under its own id, in the caller's transaction: for a publisher asked again for an
    outcome it already reported, whose first announcement may have been lost after it left the outbox (a record
    the bus lost, a consumer that parked it). A copy still waiting in the outbox is left to go out ("waiting");
    one already sent goes out again, as this transaction's own publication, the same id and payload ("again");
    with no copy in the outbox `envelope` goes out ("new"). Consumers that handled the event already skip the copy:
    their inbox holds its id."""
    row = session.execute(
        select(outbox_t.c.sent_at, outbox_t.c.payload).where(outbox_t.c.event_id == envelope.id)
    ).first()
    if row is not None and row.sent_at is None:
        return "waiting"
    if row is not None:
        # deleted and written anew: the copy takes this transaction's place in the commit order
        session.execute(outbox_t.delete().where(outbox_t.c.event_id == envelope.id))
        envelope = Envelope.from_bytes(bytes(row.payload))
    write_outbox(session, [envelope])
    return "new" if row is None else "again"


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


# A row the relay failed to publish `max_attempts` times while the bus was otherwise healthy is parked: it stays
# in the outbox with its error (attempts = max_attempts) and the relay goes on with the rows after it. Its key's
# later events are then published before it: consumers of that key see them first, and the parked event only
# when an operator retries it (`recycle outbox retry <service>`), after which it is handled once like any other.
_UNSENT = (
    select(
        outbox_t.c.seq,
        outbox_t.c.topic,
        outbox_t.c.key,
        outbox_t.c.payload,
        outbox_t.c.event_id,
        outbox_t.c.type,
    )
    .where(outbox_t.c.sent_at.is_(None), outbox_t.c.attempts < bindparam("max_attempts"))
    .order_by(outbox_t.c.seq)
    .limit(bindparam("limit"))
)
HEALTH_TOPIC = "platform.heartbeat"


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
        max_attempts: int = 10,
    ):
        self.db = db
        self.max_attempts = max_attempts
        self.active = False  # holds the relay lock and relays
        self.bus = bus
        self.service = service
        self.batch_size = batch_size
        self.idle_sleep_s = idle_sleep_s
        self.max_backoff_s = max_backoff_s
        # Fault injection for the crash test: SIGKILL this process right after publishing, before marking sent.
        self._fault = os.environ.get("RELAY_FAULT") == "kill_after_publish"

    def relay_once(self) -> int:
        with self.db.session(readonly=True) as s:
            rows = s.execute(_UNSENT, {"limit": self.batch_size, "max_attempts": self.max_attempts}).all()
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
        except Exception:
            self._find_the_failing_row(seqs, records)
            raise
        if self._fault:
            os.kill(os.getpid(), signal.SIGKILL)
        with self.db.engine.begin() as conn:
            conn.execute(_MARK_SENT, {"seqs": seqs, "now": datetime.now(UTC)})
        return len(rows)

    def _find_the_failing_row(self, seqs: list[int], records: list[Record]) -> None:
        """After a failed batch: publish its rows one by one (marking each sent) up to the first that fails. That
        row's attempt counts only if the bus is otherwise healthy — an outage is waited out, never counted — and
        at `max_attempts` it is parked."""
        for seq, rec in zip(seqs, records, strict=True):
            try:
                self.bus.publish([rec])
            except Exception as exc:  # noqa: BLE001 - classified below
                error = f"{type(exc).__name__}: {exc}"[:2000]
                break
            with self.db.engine.begin() as conn:
                conn.execute(_MARK_SENT, {"seqs": [seq], "now": datetime.now(UTC)})
        else:
            return  # the batch went through one by one after all
        try:
            self.bus.end_offsets(HEALTH_TOPIC)
        except Exception:  # noqa: BLE001 - the bus itself is down: a transient failure, not this row's
            log.warning("outbox relay for %s: the bus is unavailable (%s); waiting", self.service, error)
            return
        with self.db.session() as s, s.begin():
            attempts = s.execute(
                update(outbox_t)
                .where(outbox_t.c.seq == seq)
                .values(attempts=outbox_t.c.attempts + 1, last_error=error)
                .returning(outbox_t.c.attempts)
            ).scalar_one()
        if attempts >= self.max_attempts:
            log.error(
                "outbox relay for %s parked event %s (%s) after %d attempts: %s",
                self.service,
                rec.headers.get("ce_id"),
                rec.topic,
                attempts,
                error,
            )

    def parked(self) -> list[dict]:
        """Rows the relay gave up on (with their error), oldest first."""
        with self.db.session(readonly=True) as s:
            return [
                dict(r._mapping)
                for r in s.execute(
                    select(
                        outbox_t.c.seq,
                        outbox_t.c.event_id,
                        outbox_t.c.topic,
                        outbox_t.c.key,
                        outbox_t.c.type,
                        outbox_t.c.attempts,
                        outbox_t.c.last_error,
                        outbox_t.c.created_at,
                    )
                    .where(outbox_t.c.sent_at.is_(None), outbox_t.c.attempts >= self.max_attempts)
                    .order_by(outbox_t.c.seq)
                )
            ]

    def retry_parked(self, seqs: list[int] | None = None) -> int:
        """Put parked rows back in line (all, or the given seqs); returns how many."""
        cond = [outbox_t.c.sent_at.is_(None), outbox_t.c.attempts >= self.max_attempts]
        if seqs is not None:
            cond.append(outbox_t.c.seq.in_(seqs))
        with self.db.session() as s, s.begin():
            res: CursorResult[Any] = s.execute(update(outbox_t).where(*cond).values(attempts=0))  # type: ignore[assignment]
            return res.rowcount

    def run(self, stop: threading.Event) -> None:
        """Relay until `stop`, while this relay holds the service's relay lock (others stand by)."""
        lock = RelayLock(self.db, self.service)
        try:
            while not stop.is_set():
                if lock.acquire(stop):
                    self.active = True
                    self._relay_while_held(lock, stop)
                    self.active = False
        finally:
            lock.release()

    def _relay_while_held(self, lock: RelayLock, stop: threading.Event) -> None:
        backoff = 0.1
        idle = self.idle_sleep_s
        checked = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - checked >= lock.recheck_s:
                if not lock.still_held():  # e.g. PostgreSQL restarted and the session holding it is gone
                    log.warning("outbox relay for %s lost its lock; standing by", self.service)
                    lock.release()
                    return
                checked = time.monotonic()
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
        """Rows not yet sent (parked ones included)."""
        with self.db.session(readonly=True) as s:
            return s.execute(
                select(text("count(*)")).select_from(outbox_t).where(outbox_t.c.sent_at.is_(None))
            ).scalar_one()


class RelayLock:
    """One active relay per outbox, so rows go out once and in order; the others stand by.

    PostgreSQL: a session advisory lock, re-checked every `recheck_s` on the session that took it (a restarted
    server or a killed session drops it without telling the holder). SQLite: an exclusive `flock` on a file next
    to the database (the kernel drops it when the holder dies, even by SIGKILL)."""

    recheck_s = 1.0

    def __init__(self, db: Database, service: str):
        self.db, self.service = db, service
        self.conn: Any = None
        self._file: Any = None

    def acquire(self, stop: threading.Event, retry_s: float = 1.0) -> bool:
        """Block until this relay holds the lock (True) or `stop` is set (False)."""
        while not stop.is_set():
            try:
                if self._try():
                    return True
            except Exception:  # noqa: BLE001 - the database is unreachable: try again later
                log.warning("outbox relay for %s cannot take its lock yet", self.service, exc_info=True)
                self.release()
            stop.wait(retry_s)
        return False

    def _try(self) -> bool:
        if self.db.dialect == "postgresql":
            self.conn = self.conn or self.db.engine.connect()
            got = self.conn.execute(
                text("SELECT pg_try_advisory_lock(hashtext(:k))"), {"k": f"relay:{self.service}"}
            ).scalar()
            self.conn.commit()
            return bool(got)
        path = self.db.engine.url.database
        if self.db.dialect != "sqlite" or not path or path == ":memory:":
            return True  # a private in-memory database has one relay by construction
        import fcntl

        self._file = self._file or open(f"{path}.relay.lock", "a")  # noqa: SIM115 - held while relaying
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def still_held(self) -> bool:
        if self.db.dialect != "postgresql":
            return True  # flock cannot be taken away from a live holder
        try:
            held = self.conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() "
                    "AND granted AND objid = (hashtext(:k)::bigint & 4294967295)::oid"
                ),
                {"k": f"relay:{self.service}"},
            ).scalar()
            self.conn.commit()
            return bool(held)
        except Exception:  # noqa: BLE001 - the session is gone, and its lock with it
            return False

    def release(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()  # ends the session: releases the advisory lock
            except Exception:  # noqa: BLE001
                pass
            self.conn = None
        if self._file is not None:
            self._file.close()  # releases the flock
            self._file = None


def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0, interval_s: float = 0.02) -> bool:
    """Poll a condition (tests and CLIs); returns whether it became true in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())
