"""The event bus port. Both adapters give Kafka's semantics: topics split into partitions by key (per-key order),
consumer groups with committed offsets, replay from any offset, retention.

The port is blocking on purpose (kafka-python is); async callers run it in a thread.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_hours: int = 24 * 7
    # Kafka only (None: the adapter's own default); the embedded log keeps one copy in its database
    replication_factor: int | None = None
    min_insync_replicas: int | None = None


@dataclass(frozen=True)
class Record:
    topic: str
    key: str
    value: bytes
    headers: dict[str, str] = field(default_factory=dict)
    partition: int = -1
    offset: int = -1
    timestamp_ms: int = 0


# Set by an adapter on a record whose key or headers it could not decode (not UTF-8, not the log's JSON): the
# value is why. Consumers park such a record at once instead of failing the whole poll on it.
UNDECODABLE = "bus.undecodable"


def partition_for(key: str, partitions: int) -> int:
    """Stable key → partition (CRC32; the embedded log's own choice — Kafka uses murmur2)."""
    return zlib.crc32(key.encode()) % partitions


class Subscription(Protocol):
    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> list[Record]:
        """The next records of the partitions this member holds, in offset order per partition."""

    def commit(self, records: list[Record]) -> None:
        """Commit the offsets after these records (the group resumes after them)."""

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Replay: the next poll of that partition starts at `offset`."""

    def close(self) -> None: ...


class EventBus(Protocol):
    def ensure_topics(self, specs: list[TopicSpec]) -> None: ...

    def publish(self, records: list[Record]) -> None:
        """Durably append (acks=all / committed) before returning; raises on failure."""

    def subscribe(self, group: str, topics: list[str]) -> Subscription: ...

    def read(self, topic: str, partition: int, offset: int, max_records: int = 500) -> list[Record]:
        """Read without a group (inspection, dead-letter listing)."""

    def end_offsets(self, topic: str) -> dict[int, int]: ...

    def partitions(self, topic: str) -> int: ...

    def close(self) -> None: ...
