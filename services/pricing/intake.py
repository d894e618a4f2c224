"""Storing price inputs: one function for every source (settled pickups, firms' reports, later lot trades).

`record_observations(uow, drafts)` skips drafts already recorded (same `source_key`), gives each contributor a
pseudonymous integer code, inserts the rows, queues already-computed days for a restatement, and emits
`ObservationRecorded` (without the contributor) in the same unit of work.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.kernel.db import UnitOfWork
from services.kernel.money import qty_str

from .domain.events import ObservationRecorded
from .domain.methodology import Methodology, load_methodology
from .domain.observations import ObservationDraft, trading_day
from .store import computation_runs, counterparties, observations, restatement_queue


@dataclass(frozen=True)
class RecordedObservation:
    id: int
    day: date
    draft: ObservationDraft
    recorded_at: datetime

    def view(self) -> dict:
        """What the reporting party may see of its own input (never anyone else's)."""
        d = self.draft
        return dict(
            id=self.id,
            category=d.category,
            city_code=d.city_code,
            unit_price_fen=d.unit_price_fen,
            qty=qty_str(d.qty),
            kind=d.kind,
            tier=d.tier,
            related_party=d.related_party,
            observed_at=d.observed_at,
            day=self.day,
            recorded_at=self.recorded_at,
        )


def counterparty_codes(s: Session, parties: set[str], now: datetime) -> dict[str, int]:
    """The pseudonymous code of each party, created on first sight (a savepoint absorbs a concurrent insert)."""
    if not parties:
        return {}
    found = dict(
        s.execute(
            select(counterparties.c.party, counterparties.c.id).where(counterparties.c.party.in_(parties))
        )
        .tuples()
        .all()
    )
    for party in sorted(parties - found.keys()):
        try:
            with s.begin_nested():
                s.execute(insert(counterparties).values(party=party, first_seen_at=now))
        except IntegrityError:
            pass  # another transaction created it first
        found[party] = s.execute(
            select(counterparties.c.id).where(counterparties.c.party == party)
        ).scalar_one()
    return found


def record_observations(
    uow: UnitOfWork,
    drafts: Sequence[ObservationDraft],
    *,
    methodology: Methodology | None = None,
    now: datetime | None = None,
) -> list[RecordedObservation]:
    """Store new inputs (idempotent per source_key); returns what was recorded now."""
    if not drafts:
        return []
    m = methodology or load_methodology()
    now = now or datetime.now(UTC)
    s = uow.session
    keys = [d.source_key for d in drafts]
    if len(set(keys)) != len(keys):
        raise ValueError("two drafts share a source_key")
    seen = set(
        s.execute(select(observations.c.source_key).where(observations.c.source_key.in_(keys))).scalars()
    )
    todo = [d for d in drafts if d.source_key not in seen]
    if not todo:
        return []
    codes = counterparty_codes(s, {d.counterparty for d in todo}, now)
    tz = m.specification.timezone
    rows = [
        dict(
            category=d.category,
            city_code=d.city_code,
            day=trading_day(d.observed_at, tz),
            observed_at=d.observed_at.astimezone(UTC),  # SQLite keeps the wall clock: always store UTC
            unit_price_fen=d.unit_price_fen,
            qty_milli=d.qty_milli,
            tier=d.tier,
            kind=d.kind,
            counterparty=codes[d.counterparty],
            related_party=d.related_party,
            source=d.source,
            source_ref=d.source_ref,
            source_event_id=d.source_event_id,
            source_key=d.source_key,
            evidence=d.evidence,
            received_at=now,
        )
        for d in todo
    ]
    ids = (
        s.execute(insert(observations).returning(observations.c.id, sort_by_parameter_order=True), rows)
        .scalars()
        .all()
    )
    recorded = [
        RecordedObservation(int(i), r["day"], d, now) for i, r, d in zip(ids, rows, todo, strict=True)
    ]
    _queue_restatements(s, Counter(r.day for r in recorded), now)
    for r in recorded:
        d = r.draft
        uow.emit(
            ObservationRecorded(
                observation_id=r.id,
                series_key=f"{d.category}@{d.city_code}",
                category=d.category,
                city_code=d.city_code,
                day=r.day,
                tier=d.tier,
                kind=d.kind,
                unit_price_fen=d.unit_price_fen,
                qty=qty_str(d.qty),
                related_party=d.related_party,
                input_source=d.source,
                observed_at=d.observed_at,
                recorded_at=now,
            )
        )
    return recorded


def _queue_restatements(s: Session, per_day: Counter[date], now: datetime) -> None:
    """Inputs for a day that was already computed make that day due for a recomputation (a new version)."""
    computed = set(
        s.execute(
            select(computation_runs.c.day).where(computation_runs.c.day.in_(per_day)).distinct()
        ).scalars()
    )
    for day in sorted(computed):
        n = per_day[day]
        bump = (
            update(restatement_queue)
            .where(restatement_queue.c.day == day)
            .values(late_inputs=restatement_queue.c.late_inputs + n, last_at=now)
        )
        if s.execute(bump).rowcount:
            continue
        try:
            with s.begin_nested():
                s.execute(insert(restatement_queue).values(day=day, late_inputs=n, first_at=now, last_at=now))
        except IntegrityError:  # queued by a concurrent transaction meanwhile
            s.execute(bump)
