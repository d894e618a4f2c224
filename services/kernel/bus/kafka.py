"""The distributed event bus: Apache Kafka through kafka-python (see port.py for the contract).

- one idempotent producer (acks=all) shared by every thread of the process; `publish` waits for every record's
  acknowledgement and raises on the first failure, so the outbox relay marks rows sent only once Kafka has them;
- each subscription owns a KafkaConsumer in its group (no auto-commit, new groups start at `earliest`);
  `commit` stores the offset after each partition's last handled record;
- `read` and `end_offsets` use one group-less consumer (assign + seek), guarded by a lock;
- an unreachable broker fails fast with a ConfigError that says what to fix.

Differences from the embedded log: Kafka's partitioner is murmur2 (the log uses CRC32), so a key lands on a
different partition number on each adapter — per-key order holds on both; and group rebalances are Kafka's
(a join takes a few hundred milliseconds up to about half the session time-out).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka import errors as kerr
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from ..settings import ConfigError
from .port import UNDECODABLE, Record, TopicSpec

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = kerr.TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC = kerr.UnknownTopicOrPartitionError.errno


def _unreachable(bootstrap: str, exc: BaseException) -> ConfigError:
    return ConfigError(
        f"cannot reach Kafka at {bootstrap!r} ({type(exc).__name__}: {exc}). Check KAFKA_BOOTSTRAP "
        "(host:port[,host:port]) and that the broker is running (`python -m workers.broker` starts a local one), "
        "or set BUS=dblog to use the embedded event log."
    )


def _headers_out(headers: dict[str, str]) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in headers.items()]


def _record(m: Any) -> Record:  # a kafka ConsumerRecord
    """A consumer record as the port's Record. A key or header that is not UTF-8 is decoded with replacement
    characters and the record is marked UNDECODABLE (consumers park it): one bad record never fails a poll."""
    problems: list[str] = []
    key = ""
    if m.key is not None:
        try:
            key = m.key.decode()
        except UnicodeDecodeError:
            key, problems = m.key.decode(errors="replace"), ["key is not UTF-8"]
    headers: dict[str, str] = {}
    for k, v in m.headers or []:
        try:
            headers[k] = (v or b"").decode()
        except UnicodeDecodeError:
            headers[k] = (v or b"").decode(errors="replace")
            problems.append(f"header {k!r} is not UTF-8")
    if problems:
        headers[UNDECODABLE] = "; ".join(problems)
    return Record(
        topic=m.topic,
        key=key,
        value=m.value or b"",
        headers=headers,
        partition=m.partition,
        offset=m.offset,
        timestamp_ms=m.timestamp,
    )


class KafkaBus:
    def __init__(
        self,
        bootstrap: str,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        request_timeout_ms: int = 30_000,
        default_partitions: int = 6,
        *,
        connect_timeout_ms: int = 5_000,
        replication_factor: int = 1,
        min_insync_replicas: int = 1,
        linger_ms: int = 5,
        batch_size: int = 512 * 1024,
        compression_type: str | None = "gzip",
        fetch_max_wait_ms: int = 100,
        client_id: str = "recycle",
    ):
        self.bootstrap = bootstrap
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.request_timeout_ms = request_timeout_ms
        self.default_partitions = default_partitions
        self.connect_timeout_ms = connect_timeout_ms
        self.replication_factor = replication_factor
        self.min_insync_replicas = min_insync_replicas
        self.linger_ms = linger_ms
        self.batch_size = batch_size
        self.compression_type = compression_type
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.client_id = client_id
        self._common = dict(
            bootstrap_servers=bootstrap.split(","),
            request_timeout_ms=request_timeout_ms,
            bootstrap_timeout_ms=connect_timeout_ms,
        )
        self._parts: dict[str, int] = {}
        self._lock = threading.Lock()  # guards the admin client, the topic cache and lazy creation
        self._reader_lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._reader: KafkaConsumer | None = None
        try:
            self._admin = KafkaAdminClient(client_id=f"{client_id}-admin", **self._common)
            self._admin.list_topics()  # a metadata round trip: fail now, not at the first publish
        except (kerr.KafkaError, OSError) as exc:
            raise _unreachable(bootstrap, exc) from exc

    # --- topics ---------------------------------------------------------------------------
    def ensure_topics(self, specs: list[TopicSpec]) -> None:
        if not specs:
            return
        with self._lock:
            self._create(specs)

    def _create(self, specs: list[TopicSpec]) -> None:
        # every topic, declared, dead-letter or created on first use, gets the configured durability
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": s.replication_factor or self.replication_factor,
                "configs": {
                    "retention.ms": str(s.retention_hours * 3_600_000),
                    "min.insync.replicas": str(s.min_insync_replicas or self.min_insync_replicas),
                },
            }
            for s in specs
        }
        result = self._admin.create_topics(request, raise_errors=False, timeout_ms=self.request_timeout_ms)
        created = []
        for t in result["topics"]:
            code = t["error_code"]
            if code == 0:
                created.append(t["name"])
            elif code != _TOPIC_ALREADY_EXISTS:
                raise kerr.for_code(code)(f"creating topic {t['name']}: {t.get('error_message')}")
        if created:
            self._admin.wait_for_topics(created, timeout_ms=self.request_timeout_ms)
        for s in specs:
            self._parts.pop(s.name, None)

    def partitions(self, topic: str) -> int:
        n = self._parts.get(topic)
        if n is not None:
            return n
        with self._lock:
            n = self._describe(topic)
            if n is None:
                # As the embedded log: an unknown topic (e.g. a dead-letter topic) gets the default layout.
                self._create([TopicSpec(topic, self.default_partitions)])
                n = self._describe(topic)
            if not n:
                raise kerr.UnknownTopicOrPartitionError(f"topic {topic} has no partitions")
            self._parts[topic] = n
            return n

    def _describe(self, topic: str) -> int | None:
        for t in self._admin.describe_topics([topic]):
            if t.get("name") == topic and t.get("error_code", 0) == 0 and t.get("partitions"):
                return len(t["partitions"])
        return None

    def end_offsets(self, topic: str) -> dict[int, int]:
        """The offset after each partition's last record.

        Taken from the high watermark of a fetch, not from ListOffsets(latest): some Kafka-protocol brokers
        (tansu) answer ListOffsets with the last batch's base offset + 1."""
        tps = [TopicPartition(topic, p) for p in range(self.partitions(topic))]
        with self._reader_lock:
            reader = self._reader_consumer()
            listed = reader.end_offsets(tps, timeout_ms=self.request_timeout_ms)
            reader.unsubscribe()  # fresh partition state: no stale high watermark from an earlier call
            reader.assign(tps)
            for tp in tps:
                reader.seek(tp, max(listed.get(tp, 0) - 1, 0))
            deadline = time.monotonic() + self.request_timeout_ms / 1000
            while True:
                try:
                    reader.poll(timeout_ms=self.fetch_max_wait_ms)
                except (
                    kerr.OffsetOutOfRangeError
                ) as exc:  # retention removed the last record: fetch at the end
                    for tp in _out_of_range(exc):
                        reader.seek(tp, listed.get(tp, 0))
                    continue
                marks = {tp: reader.highwater(tp) for tp in tps}
                if all(m is not None for m in marks.values()):
                    break
                if time.monotonic() > deadline:
                    raise kerr.KafkaTimeoutError(f"no high watermark for {topic} within the request time-out")
            reader.unsubscribe()
        return {tp.partition: max(marks[tp], listed.get(tp, 0)) for tp in tps}

    # --- produce --------------------------------------------------------------------------
    @property
    def producer(self) -> KafkaProducer:
        if self._producer is None:
            with self._lock:
                if self._producer is None:
                    try:
                        self._producer = KafkaProducer(
                            client_id=f"{self.client_id}-producer",
                            acks="all",
                            enable_idempotence=True,  # retries never duplicate or reorder within a partition
                            max_in_flight_requests_per_connection=5,
                            linger_ms=self.linger_ms,
                            batch_size=self.batch_size,
                            compression_type=self.compression_type,
                            max_block_ms=self.request_timeout_ms,
                            delivery_timeout_ms=2 * self.request_timeout_ms + self.linger_ms,
                            **self._common,
                        )
                    except kerr.KafkaTimeoutError as exc:  # kafka-python 3: no broker answered the bootstrap
                        raise _unreachable(self.bootstrap, exc) from exc
        return self._producer

    def _discard_producer(self, producer: KafkaProducer) -> None:
        """Drop a producer that could not deliver within its delivery time-out; the next publish builds a new one
        (a new producer id, fresh connections). kafka-python's idempotent producer can stay stuck after the
        broker went away for longer than that time-out: its producer id is reset, and after the broker is back it
        sends nothing for minutes (tests/fault/test_outage.py, a broker killed for 45 s). Its unacknowledged
        records are the caller's to publish again (the outbox rows stay unsent; inboxes absorb duplicates)."""
        with self._lock:
            if self._producer is producer:
                self._producer = None
        try:
            producer.close(timeout=0)
        except kerr.KafkaTimeoutError:
            # kafka-python's close() flushes first and gives up when that times out, leaving its I/O thread
            # running (a leak per outage): stop that thread as close() would have, which fails what is pending
            sender = getattr(producer, "_sender", None)
            if sender is not None:
                sender.force_close()
                sender.join(5)
            try:
                producer.close(timeout=0)
            except Exception:  # noqa: BLE001 - dropped either way
                log.debug("closing a discarded producer failed", exc_info=True)
        log.warning("Kafka producer discarded after a delivery time-out; the next publish uses a new one")

    def publish(self, records: list[Record]) -> None:
        if not records:
            return
        for topic in {r.topic for r in records}:
            self.partitions(
                topic
            )  # create unknown topics with our layout, not the broker's auto-create default
        producer = self.producer
        futures = [
            producer.send(
                r.topic,
                value=r.value,
                key=r.key.encode(),
                headers=_headers_out(r.headers),
                partition=r.partition if r.partition >= 0 else None,
                timestamp_ms=r.timestamp_ms or None,
            )
            for r in records
        ]
        try:
            producer.flush(timeout=producer.config["delivery_timeout_ms"] / 1000)
        except kerr.KafkaTimeoutError:
            self._discard_producer(producer)
            raise
        first_error: BaseException | None = None
        failed = 0
        for f in futures:
            try:
                f.get(timeout=0)
            except Exception as exc:  # noqa: BLE001 - collect, then raise the first
                failed += 1
                first_error = first_error or exc
        if isinstance(first_error, kerr.KafkaTimeoutError):
            self._discard_producer(producer)
        if first_error is not None:
            raise kerr.KafkaError(
                f"{failed} of {len(records)} records were not acknowledged: "
                f"{type(first_error).__name__}: {first_error}"
            ) from first_error

    # --- consume --------------------------------------------------------------------------
    def subscribe(self, group: str, topics: list[str]) -> KafkaSubscription:
        for t in topics:
            self.partitions(t)  # a consumer subscribed to a missing topic would not see it for minutes
        return KafkaSubscription(self, group, topics)

    def _consumer(self, **kw: object) -> KafkaConsumer:
        config: dict[str, object] = dict(
            enable_auto_commit=False,
            # A new group reads from the start of the log (and so never relies on "latest", which some
            # Kafka-protocol brokers answer wrongly); afterwards the committed offsets rule.
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self.fetch_max_wait_ms,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            **self._common,
        )
        config.update(kw)
        try:
            return KafkaConsumer(**config)
        except kerr.KafkaTimeoutError as exc:  # kafka-python 3: no broker answered the bootstrap
            raise _unreachable(self.bootstrap, exc) from exc

    def _reader_consumer(self) -> KafkaConsumer:
        if self._reader is None:
            # No reset policy: an offset out of range raises, and read() decides (past the end → nothing).
            self._reader = self._consumer(
                group_id=None, client_id=f"{self.client_id}-reader", auto_offset_reset="none"
            )
        return self._reader

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        tp = TopicPartition(topic, partition)
        out: list[Record] = []
        with self._reader_lock:
            reader = self._reader_consumer()
            reader.unsubscribe()  # fresh partition state: the high watermark below comes from this read
            reader.assign([tp])
            reader.seek(tp, offset)
            deadline = time.monotonic() + self.request_timeout_ms / 1000
            next_offset = offset
            while len(out) < max_records:
                try:
                    batch = reader.poll(timeout_ms=self.fetch_max_wait_ms, max_records=max_records - len(out))
                except kerr.OffsetOutOfRangeError:
                    start = reader.beginning_offsets([tp], timeout_ms=self.request_timeout_ms)[tp]
                    if next_offset >= start:
                        break  # past the end: nothing to read
                    reader.seek(tp, start)  # before the start (retention): read from the oldest record kept
                    next_offset = start
                    continue
                for m in batch.get(tp, []):
                    out.append(_record(m))
                    next_offset = m.offset + 1
                hw = reader.highwater(tp)  # from a fetch of this read: the state was reset above
                if hw is not None and next_offset >= hw:
                    break
                if time.monotonic() > deadline:
                    raise kerr.KafkaTimeoutError(f"reading {topic}/{partition}@{offset} timed out")
            reader.unsubscribe()
        return out

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=self.request_timeout_ms / 1000)
                self._producer = None
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close(autocommit=False)
                self._reader = None
        self._admin.close()


def _out_of_range(exc: kerr.OffsetOutOfRangeError) -> list[TopicPartition]:
    arg = exc.args[0] if exc.args else {}
    return list(arg) if isinstance(arg, dict) else []


class _Seeker(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no types
    """Applies seeks asked for before the group handed this member the partition."""

    def __init__(self, sub: KafkaSubscription):
        self.sub = sub

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self.sub._seek_lock:
            for tp in assigned:
                off = self.sub._pending_seeks.pop(tp, None)
                if off is not None:
                    self.sub.consumer.seek(tp, off)


class KafkaSubscription:
    """One member of a consumer group. Not shared between threads: each consuming thread subscribes itself."""

    def __init__(self, bus: KafkaBus, group: str, topics: list[str]):
        self.bus = bus
        self.group = group
        self.topics = list(topics)
        self._pending_seeks: dict[TopicPartition, int] = {}
        self._seek_lock = threading.Lock()
        self.consumer = bus._consumer(group_id=group, client_id=f"{bus.client_id}-{group}")
        self.consumer.subscribe(self.topics, listener=_Seeker(self))

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Record]:
        batch = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        out: list[Record] = []
        for msgs in batch.values():
            out.extend(_record(m) for m in msgs)
        return out

    def commit(self, records: list[Record]) -> None:
        if not records:
            return
        last: dict[TopicPartition, int] = {}
        for r in records:
            tp = TopicPartition(r.topic, r.partition)
            last[tp] = max(last.get(tp, -1), r.offset + 1)
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in last.items()})
        except (kerr.CommitFailedError, kerr.RebalanceInProgressError) as exc:
            # The group rebalanced under us: the partitions' new owner resumes from the last successful commit,
            # so these records come again (at-least-once); consumers dedupe by event id.
            log.warning(
                "group %s: commit skipped during a rebalance (%s); records will be redelivered",
                self.group,
                exc,
            )

    def seek(self, topic: str, partition: int, offset: int) -> None:
        tp = TopicPartition(topic, partition)
        with self._seek_lock:
            if tp in self.consumer.assignment():
                self.consumer.seek(tp, offset)
            else:
                self._pending_seeks[tp] = offset  # applied when the group assigns it to this member

    def close(self) -> None:
        self.consumer.close(
            autocommit=False
        )  # leaves the group at once, so the others rebalance without waiting
