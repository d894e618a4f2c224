"""The close (落槌): lots whose end time has passed are awarded to the best bid at or above reserve, or unsold.

The state is in the lots table: every scan selects the open lots that are due now, so a scan missed while the
workers were down is caught up by the next one, and a process killed mid-scan leaves each lot either closed (its
transaction committed, with its events in the outbox) or still open (rolled back, closed by the next scan).
Each lot closes in its own unit of work under its row lock and a conditional UPDATE (`status = 'open' AND
ends_at <= now`), and its trade's id follows from the lot's (primary key): two scans at once, or a scan racing a
late bid that extended the lot, cannot close it twice.

Run by Celery beat (services/trading/tasks.py) every `close_interval_s`; tests call `run_due(rt, now)`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from services.contracts.trading import LotClosed, TradeAwarded
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.runtime import ServiceRuntime

from .deposits import release_losers
from .domain import model as m
from .domain import rules
from .feed import Tx
from .handlers import firms_related
from .settings import settings_of
from .store import bids, intake, lot_sources, lots, trades

log = logging.getLogger(__name__)


def run_due(rt: ServiceRuntime, now: datetime | None = None) -> dict[str, int]:
    """Close every open lot whose end time is at or before `now`; returns how many were awarded and unsold."""
    cfg = settings_of(rt)
    out = {"awarded": 0, "unsold": 0}
    failed: set[str] = set()
    while True:
        at = now or datetime.now(UTC)
        with rt.db.session(readonly=True) as s:
            due = [
                r
                for r in s.execute(
                    select(lots.c.id)
                    .where(lots.c.status == m.LOT_OPEN, lots.c.ends_at <= at)
                    .order_by(lots.c.ends_at, lots.c.id)
                    .limit(cfg.close_batch + len(failed))
                ).scalars()
                if r not in failed
            ]
        if not due:
            return out
        for lot_id in due[: cfg.close_batch]:
            try:
                result = retry_on_conflict(lambda lot_id=lot_id, at=at: close_lot(rt, lot_id, at))
            except Exception:  # noqa: BLE001 - one bad lot must not stop the others; the next scan retries it
                log.exception("closing lot %s failed", lot_id)
                failed.add(lot_id)
                continue
            if result:
                out[result] += 1


def close_lot(rt: ServiceRuntime, lot_id: str, now: datetime) -> str | None:
    """Close one lot if it is still open and due: "awarded", "unsold", or None (closed already, or extended)."""
    with Tx(rt) as uow:
        s = uow.session
        lot = s.execute(
            select(lots)
            .where(lots.c.id == lot_id, lots.c.status == m.LOT_OPEN, lots.c.ends_at <= now)
            .with_for_update()
        ).one_or_none()
        if lot is None:
            return None
        rows = s.execute(
            select(bids.c.id, bids.c.firm_id, bids.c.price_fen_per_t, bids.c.placed_at, bids.c.seq).where(
                bids.c.lot_id == lot_id
            )
        ).all()
        all_bids = [rules.BidFacts(r.id, r.firm_id, r.price_fen_per_t, r.placed_at, r.seq) for r in rows]
        won = rules.winner(all_bids, lot.reserve_fen_per_t)
        status = m.next_state("close_awarded" if won else "close_unsold", lot.status)
        trade_id = m.trade_id_for(lot_id) if won else None
        res = s.execute(
            update(lots)
            .where(lots.c.id == lot_id, lots.c.status == m.LOT_OPEN)
            .values(
                status=status,
                closed_at=now,
                trade_id=trade_id,
                best_fen_per_t=won.price_fen_per_t if won else lot.best_fen_per_t,
                best_bid_id=won.bid_id if won else lot.best_bid_id,
                version=lots.c.version + 1,
            )
        )
        if res.rowcount != 1:
            return None
        if won is None:
            _release_intake(s, lot_id)
        else:
            _award(uow, lot, won, trade_id, now)
        uow.emit(
            LotClosed(
                lot_id=lot_id,
                status=status,
                trade_id=trade_id,
                price_fen_per_t=won.price_fen_per_t if won else None,
                bid_count=len(all_bids),
                closed_at=now,
            )
        )
        release_losers(uow, lot_id, won.firm_id if won else None, now)
    return status


def _award(uow: UnitOfWork, lot: Any, won: rules.BidFacts, trade_id: str, now: datetime) -> None:
    s = uow.session
    related = firms_related(s, lot.seller_firm_id, won.firm_id)
    s.execute(
        trades.insert().values(
            id=trade_id,
            lot_id=lot.id,
            bid_id=won.bid_id,
            seller_firm_id=lot.seller_firm_id,
            buyer_firm_id=won.firm_id,
            category=lot.category,
            grade=lot.grade,
            city_code=lot.city_code,
            qty_kg=lot.qty_kg,
            price_fen_per_t=won.price_fen_per_t,
            related_party=related,
            status=m.AWARDED,
            awarded_at=now,
            version=1,
        )
    )
    uow.emit(
        TradeAwarded(
            trade_id=trade_id,
            lot_id=lot.id,
            seller_firm_id=lot.seller_firm_id,
            buyer_firm_id=won.firm_id,
            category=lot.category,
            grade=lot.grade,
            city_code=lot.city_code,
            related_party=related,
            qty_t=m.kg_to_tonnes_str(lot.qty_kg),
            price_fen_per_t=won.price_fen_per_t,
            awarded_at=now,
        )
    )


def _release_intake(s: Any, lot_id: str) -> None:
    """An unsold lot gives its intake back: it may be listed again."""
    for src in s.execute(
        select(lot_sources).where(lot_sources.c.lot_id == lot_id, lot_sources.c.released.is_(False))
    ).all():
        s.execute(
            update(intake)
            .where(intake.c.pickup_id == src.pickup_id, intake.c.line_no == src.line_no)
            .values(allocated_g=intake.c.allocated_g - src.qty_g)
        )
    s.execute(update(lot_sources).where(lot_sources.c.lot_id == lot_id).values(released=True))
