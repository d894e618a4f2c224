"""Rebuild every stats table from the event log: clear, then replay `booking.pickup` and `trading.trade` from
offset 0 through the same handlers the live consumer groups run.

Why the figures come out the same as the live ones: the handlers are idempotent on the fact's own id (a pickup
row, a trade turning settled) and every aggregate is a sum or a distinct set over those facts, so order across
partitions does not matter and a record seen twice counts once.

Safe beside a running consumer: the tables are cleared first and the end of each partition is taken after that,
so every record the live group handled before the clear is below the end and replayed here, and any record it
handles meanwhile is counted once by whichever side comes first.

A log that no longer holds a partition's first record (retention) cannot rebuild: the rebuild refuses unless
told to accept the loss (`allow_truncated`), because the figures would silently shrink.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete

from services.kernel.bus.port import EventBus
from services.kernel.consumer import ConsumerSpec
from services.kernel.db import Database, UnitOfWork
from services.kernel.errors import RuleViolated
from services.kernel.events import Envelope

from .store import FACT_TABLES

Progress = Callable[[int, int], None]  # (records done, records total)


@dataclass
class RebuildResult:
    records: int = 0
    handled: int = 0
    skipped: int = 0  # other event types of the same topics
    undecodable: int = 0
    ends: dict[str, dict[int, int]] = field(default_factory=dict)


def clear(db: Database) -> None:
    with UnitOfWork(db) as uow:
        for table in reversed(FACT_TABLES):
            uow.session.execute(delete(table))


def rebuild(
    db: Database,
    bus: EventBus,
    specs: list[ConsumerSpec],
    *,
    batch: int = 500,
    progress: Progress | None = None,
    allow_truncated: bool = False,
) -> RebuildResult:
    handlers = {t: h for spec in specs for t, h in spec.handlers.items()}
    topics = sorted({t for spec in specs for t in spec.topics})
    # refuse before touching anything when the log has lost its start
    for topic in topics:
        for p in range(bus.partitions(topic)):
            first = bus.read(topic, p, 0, 1)
            if first and first[0].offset > 0 and not allow_truncated:
                raise RuleViolated(
                    f"{topic}[{p}] starts at offset {first[0].offset}: retention removed the "
                    "first records, a rebuild would lose them",
                    reason="log_truncated",
                )
    clear(db)
    result = RebuildResult(ends={t: bus.end_offsets(t) for t in topics})
    total = sum(sum(ends.values()) for ends in result.ends.values())
    if progress:
        progress(0, total)
    for topic in topics:
        for p, end in sorted(result.ends[topic].items()):
            offset = 0
            while offset < end:
                records = [r for r in bus.read(topic, p, offset, min(batch, end - offset)) if r.offset < end]
                if not records:
                    break
                with UnitOfWork(db) as uow:
                    for rec in records:
                        type_ = rec.headers.get("ce_type")
                        if type_ is not None and type_ not in handlers:
                            result.skipped += 1
                            continue
                        try:
                            env = Envelope.from_bytes(rec.value)
                        except Exception:  # noqa: BLE001 - the live group parked it too
                            result.undecodable += 1
                            continue
                        handler = handlers.get(env.type)
                        if handler is None:
                            result.skipped += 1
                            continue
                        handler(env, uow)
                        result.handled += 1
                result.records += len(records)
                offset = records[-1].offset + 1
                if progress:
                    progress(result.records, total)
    return result
