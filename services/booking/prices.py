"""Booking's copy of the price index: kept current from `pricing.index` events, read for quotes and weighing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from services.contracts.pricing import IndexPublished
from services.kernel.db import Database, UnitOfWork
from services.kernel.taxonomy import leaf, leaves

from .store import price_copy

NATIONAL = "000000"
# the as-of date of the taxonomy's reference prices (pricing seeds them with this date)
REFERENCE_DATE = date(2026, 1, 1)


def update_price_copy(event: IndexPublished, uow: UnitOfWork) -> None:
    """Keep the newest (date, version) of each published price series."""
    if event.kind != "price":
        return
    s = uow.session
    row = s.execute(
        select(price_copy).where(price_copy.c.code == event.code, price_copy.c.region == event.region)
    ).first()
    new = (event.date, event.version)
    # Events may arrive late or twice: keep only the newest (date, version) per series.
    if row is not None and (row.date, row.version) >= new:
        return
    values = dict(
        date=new[0],
        version=new[1],
        unit_price_fen=event.unit_price_fen,
        stale=event.stale,
        reference=event.reference,
        updated_at=datetime.now(UTC),
    )
    if row is None:
        s.execute(price_copy.insert().values(code=event.code, region=event.region, **values))
    else:
        s.execute(
            price_copy.update()
            .where(price_copy.c.code == event.code, price_copy.c.region == event.region)
            .values(**values)
        )


@dataclass(frozen=True)
class PriceQuote:
    code: str
    unit_price_fen: int
    source_region: str
    as_of: date
    stale: bool
    reference: bool


_PRICES = select(price_copy).where(
    price_copy.c.code.in_(bindparam("codes", expanding=True)),
    price_copy.c.region.in_(bindparam("regions", expanding=True)),
)


def current_price(s: Session, code: str, city_code: str) -> PriceQuote | None:
    """City → province → national; a region with no published value (insufficient data) is skipped."""
    return current_prices(s, [code], city_code).get(code)


def current_prices(s: Session, codes: list[str], city_code: str) -> dict[str, PriceQuote]:
    """`current_price` for several categories in one query."""
    chain = list(dict.fromkeys([city_code, city_code[:2] + "0000", NATIONAL]))
    rows: dict[tuple[str, str], Any] = {
        (r.code, r.region): r for r in s.execute(_PRICES, {"codes": codes, "regions": chain}).all()
    }
    out = {}
    for code in codes:
        for region in chain:
            r = rows.get((code, region))
            if r is not None and r.unit_price_fen is not None:
                out[code] = PriceQuote(
                    code, r.unit_price_fen, region, r.date, r.stale or region != city_code, r.reference
                )
                break
    return out


class PriceCache:
    """The price copy as seen from one city, kept for a few seconds: quotes and weighings read it on every
    request, while it changes when pricing publishes (daily). The consumer that updates the copy empties it;
    other processes see a new price after at most `ttl_s`."""

    def __init__(self, ttl_s: float = 5.0):
        self.ttl_s = ttl_s
        self._by_city: dict[str, tuple[float, dict[str, PriceQuote]]] = {}

    def cached(self, city_code: str) -> dict[str, PriceQuote] | None:
        """The city's prices if the cache holds them and they are fresh; None otherwise (no I/O)."""
        hit = self._by_city.get(city_code)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return None

    def prices(self, db: Database, city_code: str) -> dict[str, PriceQuote]:
        hit = self._by_city.get(city_code)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        with UnitOfWork(db, readonly=True) as uow:
            found = current_prices(uow.session, [c.code for c in leaves()], city_code)
        self._by_city[city_code] = (now, found)
        return found

    def clear(self) -> None:
        self._by_city.clear()


def prices_in_force(found: dict[str, PriceQuote], codes: list[str]) -> dict[str, PriceQuote]:
    """The price of each category for a quote or a weighing, from what the price copy holds for the city (`found`),
    else the taxonomy's national reference price (what pricing seeds as the national fallback until the index has
    data). Categories that do not pay the resident (glass, hazardous, bulky) are priced 0 whatever the market says."""
    out = {}
    for code in codes:
        cat = leaf(code)
        q = found.get(code) or PriceQuote(code, cat.reference_price_fen, NATIONAL, REFERENCE_DATE, True, True)
        out[code] = q if cat.pays else PriceQuote(code, 0, q.source_region, q.as_of, q.stale, q.reference)
    return out
