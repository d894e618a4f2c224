"""Booking's copy of the price index: kept current from `pricing.index` events, read for quotes and weighing."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.kernel.db import UnitOfWork
from services.kernel.events import Envelope

from .store import price_copy

NATIONAL = "000000"


def when_index_published_update_price_copy(env: Envelope, uow: UnitOfWork) -> None:
    d = env.data
    if d["kind"] != "price":
        return
    s = uow.session
    row = s.execute(select(price_copy).where(price_copy.c.code == d["code"], price_copy.c.region == d["region"])
                    ).first()
    new = (date.fromisoformat(d["date"]), d["version"])
    # Events may arrive late or twice: keep only the newest (date, version) per series.
    if row is not None and (row.date, row.version) >= new:
        return
    values = dict(date=new[0], version=new[1], unit_price_fen=d.get("unit_price_fen"), stale=d["stale"],
                  reference=d.get("reference", False), updated_at=datetime.now(UTC))
    if row is None:
        s.execute(price_copy.insert().values(code=d["code"], region=d["region"], **values))
    else:
        s.execute(price_copy.update().where(price_copy.c.code == d["code"], price_copy.c.region == d["region"])
                  .values(**values))


@dataclass(frozen=True)
class PriceQuote:
    code: str
    unit_price_fen: int
    source_region: str
    as_of: date
    stale: bool
    reference: bool


def current_price(s: Session, code: str, city_code: str) -> PriceQuote | None:
    """City → province → national; a region with no published value (insufficient data) is skipped."""
    chain = [city_code, city_code[:2] + "0000", NATIONAL]
    rows = {r.region: r for r in s.execute(
        select(price_copy).where(price_copy.c.code == code, price_copy.c.region.in_(chain))).all()}
    for region in dict.fromkeys(chain):
        r = rows.get(region)
        if r is not None and r.unit_price_fen is not None:
            return PriceQuote(code, r.unit_price_fen, region, r.date, r.stale or region != city_code, r.reference)
    return None
