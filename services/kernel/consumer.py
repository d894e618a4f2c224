"""The consumer runner: at-least-once delivery made effectively-once by the inbox.

For each record: open a unit of work on the consuming service's database; skip it if the inbox already holds the
event id; else run the handler and record the id, in the same transaction. A failing record is retried a bounded
number of times with backoff, then parked in the group's dead-letter topic (`dlq.<group>`) with the error, and
the group moves on. `replay_dead_letters` sends parked records back to their original topic.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .bus.port import UNDECODABLE, EventBus, Record, Subscription, TopicSpec
from .db import Database, UnitOfWork
from .events import Envelope, Event, current_event_id, current_trace_id
from .outbox import inbox_record, inbox_record_many, inbox_seen, inbox_seen_many

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, UnitOfWork], None]


@dataclass
class ConsumerSpec:
    """A consumer group as the runner sees it: which topics it reads and which envelope handler each event type
    goes to. Event types not in `handlers` are acknowledged and ignored (a topic carries a whole aggregate family).

    Services never build one by hand: `group()` builds it from contract classes and typed handlers (a test checks
    this). The envelope form is for the kernel's own tests and tools.
    """

    group: str
    topics: list[str]
    handlers: dict[str, Handler] = field(default_factory=dict)


E = TypeVar("E", bound=Event)
# The one handler shape of the platform: `when_<event>_<action>(event, uow)`, the event decoded as its contract class.
EventHandler = Callable[[Any, UnitOfWork], None]


def group(name: str, handlers: Mapping[type[Event], EventHandler]) -> ConsumerSpec:
    """A consumer group from a mapping of contract classes to handlers; the topics follow from the classes.

    Each service's `consumers.py` declares its groups this way (no string-typed dispatch)::

        def consumers(rt) -> list[ConsumerSpec]:
            return [group("listings.certificates", {CertificateIssued: when_certificate_issued_keep_copy})]

    A handler that needs the runtime (its settings, a cache) takes it as the keyword `rt`, bound in `consumers`:
    `partial(when_pickup_settled_issue_invoice, rt=rt)`. The id of the event being handled is
    `events.current_event_id.get()`.
    """
    topics = sorted({cls.topic for cls in handlers})
    return ConsumerSpec(name, topics, {cls.type: _typed(cls, fn) for cls, fn in handlers.items()})


def _typed(cls: type[Event], fn: EventHandler) -> Handler:
    def handle(env: Envelope, uow: UnitOfWork) -> None:
        fn(cls.decode(env.data), uow)

    # a partial (a handler bound to its runtime) is named after its function
    handle.__name__ = str(
        getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", "handle")
    )
    handle.__wrapped__ = fn  # type: ignore[attr-defined]
    return handle


def dlq_topic(group: str) -> str:
    return f"dlq.{group}"


class ConsumerRunner:
    def __init__(
        self,
        spec: ConsumerSpec,
        db: Database,
        bus: EventBus,
        max_attempts: int = 5,
        backoff_s: float = 0.2,
        linger_s: float = 0.05,
    ):
        self.spec = spec
        self.db = db
        self.bus = bus
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        # After a short batch, wait this long before polling again (Kafka's fetch.max.wait): under a steady trickle
        # the group handles a few dozen events per poll and commit instead of one or two.
        self.linger_s = linger_s
        self._sub: Subscription | None = None
        self.handled = 0
        self.dead_lettered = 0
        self.paused = 0  # times the group waited out an outage
        self.max_pause_s = 30.0

    @property
    def subscription(self) -> Subscription:
        if self._sub is None:
            self._sub = self.bus.subscribe(self.spec.group, self.spec.topics)
        return self._sub

    def run_once(self, timeout_s: float = 0.5, max_records: int = 500) -> int:
        records = self.subscription.poll(timeout_s, max_records)
        if records:
            try:
                self._process_batch(records)
                self.subscription.commit(records)
            except BaseException:
                # The subscription has moved past this batch; rewind it so a later commit cannot skip
                # records that were never handled (they are redelivered; the inbox absorbs repeats).
                first: dict[tuple[str, int], int] = {}
                for r in records:
                    first.setdefault((r.topic, r.partition), r.offset)
                for (topic, partition), offset in first.items():
                    self.subscription.seek(topic, partition, offset)
                raise
        return len(records)

    def run(self, stop: threading.Event) -> None:
        max_records = 500
        pause = self.backoff_s
        while not stop.is_set():
            try:
                n = self.run_once(max_records=max_records)
                pause = self.backoff_s
                if 0 < n < max_records and self.linger_s:
                    stop.wait(self.linger_s)
            except Exception as exc:
                # The batch was rewound: nothing is parked and nothing skipped. An outage (database, broker)
                # pauses the group with a growing back-off until it is over.
                if isinstance(exc, Unavailable) or is_transient(exc):
                    self.paused += 1
                    log.warning("consumer %s paused %.1fs: %s", self.spec.group, pause, exc)
                else:
                    log.exception("consumer %s failed; retrying", self.spec.group)
                stop.wait(pause)
                pause = min(max(pause, 0.1) * 2, self.max_pause_s)
                if is_transient(exc) and not isinstance(exc, Unavailable):
                    self.close()  # the poll itself failed (bus unreachable): subscribe afresh
        self.close()

    def close(self) -> None:
        if self._sub is not None:
            self._sub.close()
            self._sub = None

    # -----------------------------------------------------------------------------------
    def _process_batch(self, records: list[Record]) -> None:
        """The fast path: a whole poll in one unit of work. Each record is checked against the inbox and, if new,
        handled and recorded in the inbox — the per-record rule, with one commit for the batch.

        If a handler fails, the transaction rolls back (no effect, no inbox row) and the batch is redone one record
        at a time by the per-record path below; the failed call counts as the failing record's first attempt, so a
        poison message still gets exactly `max_attempts` tries before it is parked. Undecodable records take the
        per-record path directly (it parks them)."""
        todo: list[tuple[Record, Envelope, Handler]] = []
        for rec in records:
            if UNDECODABLE in rec.headers:  # the adapter could not read its key or headers: park it, go on
                self._dead_letter(rec, f"undecodable record: {rec.headers[UNDECODABLE]}", attempts=1)
                continue
            type_ = rec.headers.get("ce_type")
            if type_ is not None and type_ not in self.spec.handlers:
                continue  # a type this group ignores: no need to decode it
            try:
                env = Envelope.from_bytes(rec.value)
            except Exception:  # noqa: BLE001
                self._process(rec)
                continue
            handler = self.spec.handlers.get(env.type)
            if handler is not None:
                todo.append((rec, env, handler))
        if not todo:
            return
        failed_at, error = -1, ""
        try:
            with UnitOfWork(self.db) as uow:
                seen = inbox_seen_many(uow.session, self.spec.group, [env.id for _, env, _ in todo])
                new_ids: list[str] = []
                for i, (_, env, handler) in enumerate(todo):
                    if env.id in seen:
                        continue
                    seen.add(env.id)  # the same event twice in one poll
                    token = current_trace_id.set(env.traceid)
                    event_token = current_event_id.set(env.id)
                    try:
                        handler(env, uow)
                    except Exception as exc:
                        failed_at, error = i, _describe(exc)
                        log.warning(
                            "consumer %s: %s (event %s, attempt 1/%d)",
                            self.spec.group,
                            error,
                            env.id,
                            self.max_attempts,
                        )
                        raise
                    finally:
                        current_trace_id.reset(token)
                        current_event_id.reset(event_token)
                    new_ids.append(env.id)
                inbox_record_many(uow.session, self.spec.group, new_ids)
            self.handled += len(new_ids)
        except Exception as exc:  # noqa: BLE001 - redo one by one, where retries and dead letters apply
            if is_transient(exc):
                raise Unavailable(_describe(exc)) from exc
            log.info(
                "consumer %s: batch of %d rolled back (%s); handling its records one by one",
                self.spec.group,
                len(todo),
                type(exc).__name__,
            )
            for i, (rec, _, _) in enumerate(todo):
                self._process(rec, prior_error=error if i == failed_at else "")

    def _process(self, rec: Record, prior_error: str = "") -> None:
        try:
            env = Envelope.from_bytes(rec.value)
        except Exception as exc:  # noqa: BLE001 - not even an envelope: retrying cannot help
            self._dead_letter(rec, f"undecodable record: {exc}", attempts=1)
            return
        handler = self.spec.handlers.get(env.type)
        if handler is None:
            return
        error = prior_error
        first = 2 if prior_error else 1  # the batch already made the first attempt
        for attempt in range(first, self.max_attempts + 1):
            if attempt > 1:
                time.sleep(self.backoff_s * (2 ** (attempt - 2)))
            token = current_trace_id.set(env.traceid)
            event_token = current_event_id.set(env.id)
            try:
                with UnitOfWork(self.db) as uow:
                    if inbox_seen(uow.session, self.spec.group, env.id):
                        return
                    handler(env, uow)
                    inbox_record(uow.session, self.spec.group, env.id)
                self.handled += 1
                return
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then parked
                if is_transient(exc):  # the database or broker is down: wait, never park
                    raise Unavailable(_describe(exc)) from exc
                error = _describe(exc)
                log.warning(
                    "consumer %s: %s (event %s, attempt %d/%d)",
                    self.spec.group,
                    error,
                    env.id,
                    attempt,
                    self.max_attempts,
                )
            finally:
                current_trace_id.reset(token)
                current_event_id.reset(event_token)
        self._dead_letter(rec, error, self.max_attempts)

    def _dead_letter(self, rec: Record, error: str, attempts: int) -> None:
        headers = dict(rec.headers)
        headers.update(
            {
                "dlq.group": self.spec.group,
                "dlq.original_topic": rec.topic,
                "dlq.original_partition": str(rec.partition),
                "dlq.original_offset": str(rec.offset),
                "dlq.error": error[:1000],
                "dlq.attempts": str(attempts),
            }
        )
        self.bus.publish(
            [Record(topic=dlq_topic(self.spec.group), key=rec.key, value=rec.value, headers=headers)]
        )
        self.dead_lettered += 1
        log.error(
            "consumer %s parked %s/%d@%d in %s: %s",
            self.spec.group,
            rec.topic,
            rec.partition,
            rec.offset,
            dlq_topic(self.spec.group),
            error,
        )


class Unavailable(Exception):
    """A record could not be handled because the database or the broker is unavailable (not its own fault)."""


def is_transient(exc: BaseException) -> bool:
    """Whether a failure says the database or the broker is unavailable (retry later, never park) rather than
    that the record cannot be handled (retry a few times, then park)."""
    from sqlalchemy import exc as sa_exc

    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:  # look through wrapping exceptions too
        seen.add(id(e))
        if isinstance(
            e,
            Unavailable
            | sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.DisconnectionError
            | sa_exc.TimeoutError
            | ConnectionError
            | TimeoutError,
        ):
            return True
        if isinstance(e, sa_exc.DBAPIError) and e.connection_invalidated:
            return True
        if type(e).__module__.startswith("kafka") and getattr(e, "retriable", False):
            return True
        if type(e).__name__ in ("NoBrokersAvailable", "KafkaConnectionError", "KafkaTimeoutError"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def replayed_topic(group: str) -> str:
    """Where replays are recorded: one marker record per parked record sent back (key `partition@offset`)."""
    return f"{dlq_topic(group)}.replayed"


def _read_all(bus: EventBus, topic: str, limit: int | None = None) -> Iterator[Record]:
    """Every record of a topic, partition by partition, in pages of 500."""
    n = 0
    for p in range(bus.partitions(topic)):
        offset = 0
        while limit is None or n < limit:
            batch = bus.read(topic, p, offset, 500 if limit is None else min(500, limit - n))
            if not batch:
                break
            yield from batch
            n += len(batch)
            offset = batch[-1].offset + 1


def list_dead_letters(bus: EventBus, group: str, limit: int | None = None) -> list[Record]:
    """The records parked by `group` (all of them unless `limit`)."""
    return list(_read_all(bus, dlq_topic(group), limit))


def replayed_dead_letters(bus: EventBus, group: str) -> set[tuple[int, int]]:
    """(partition, offset) of every parked record of `group` that was sent back."""
    out = set()
    for r in _read_all(bus, replayed_topic(group)):
        p, _, o = r.key.partition("@")
        out.add((int(p), int(o)))
    return out


def replay_dead_letters(
    bus: EventBus, group: str, offsets: set[tuple[int, int]] | None = None, again: bool = False
) -> int:
    """Send parked records back to their original topic (all, or the given (partition, offset) pairs), page by
    page, and record each one sent in `dlq.<group>.replayed`; records replayed before are left alone unless
    `again`. Other groups on that topic see the record again and skip it through their inbox (as does this one,
    if a crash between sending and recording makes the next replay send it twice)."""
    bus.ensure_topics([TopicSpec(replayed_topic(group), 1, 30 * 24)])
    done = set() if again else replayed_dead_letters(bus, group)
    page: list[Record] = []
    n = 0

    def flush() -> None:
        bus.publish(
            [
                Record(
                    topic=r.headers["dlq.original_topic"],
                    key=r.key,
                    value=r.value,
                    headers={k: v for k, v in r.headers.items() if not k.startswith("dlq.")}
                    | {"replayed_from": f"{dlq_topic(group)}/{r.partition}@{r.offset}"},
                )
                for r in page
            ]
        )
        stamp = str(int(time.time() * 1000))
        bus.publish(
            [
                Record(
                    topic=replayed_topic(group),
                    key=f"{r.partition}@{r.offset}",
                    value=b"",
                    headers={"replayed_at_ms": stamp},
                )
                for r in page
            ]
        )
        page.clear()

    for r in _read_all(bus, dlq_topic(group)):
        if (r.partition, r.offset) in done or (
            offsets is not None and (r.partition, r.offset) not in offsets
        ):
            continue
        page.append(r)
        n += 1
        if len(page) == 500:
            flush()
    if page:
        flush()
    return n
