"""Buyer default (违约) and second-chance offers: the seller's declaration, the deadline job, the offeree's answer.

    default ─▶ the trade is `defaulted`; the buyer's held deposit is captured for the seller less the fee
               (deposits.forfeit); an unpaid payment is cancelled (a late authorisation is given back)
            ─▶ the next-best bid at or above reserve of a firm that has not had the lot: a trade of the next round,
               `offered` at that bid's price until `offer_deadline_s` ─▶ accept: `awarded` (delivery as usual)
                                                                      decline / deadline: the next one again
            ─▶ none left: the lot is `returned` to the seller and its intake freed for a new lot

The state is in the tables, as for the close: the deadline job (`run_deadlines`, Celery beat every
`deadline_interval_s`) selects what is overdue now, so a scan missed while the workers were down is caught up by the
next one. Each trade is handled in its own unit of work under its row lock and a conditional UPDATE on its state,
and the next round's trade id follows from the lot and the round (primary key): two scans at once, a scan racing the
seller's declaration, or the buyer's payment arriving at the deadline, change a trade once. Rules: domain/defaults.py.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update

from services.contracts.trading import (
    LotReturned,
    TradeAwarded,
    TradeDefaulted,
    TradeOffered,
    TradeOfferEnded,
)
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, RuleViolated
from services.kernel.runtime import ServiceRuntime

from . import deposits
from .domain import defaults as d
from .domain import model as m
from .domain import rules
from .feed import Tx
from .settings import TradingSettings, settings_of
from .settlement import PAY_CANCELLED, owner_of
from .store import bids, lots, trades
from .trades import _load, _party, trade_view

log = logging.getLogger(__name__)


def deadlines(cfg: TradingSettings) -> d.Deadlines:
    return d.Deadlines(
        payment_deadline_s=cfg.payment_deadline_s,
        collect_deadline_s=cfg.collect_deadline_s,
        offer_deadline_s=cfg.offer_deadline_s,
    )


def facts(t: Any) -> d.TradeFacts:
    return d.TradeFacts(
        status=t.status,
        awarded_at=t.awarded_at,
        delivered_at=t.delivered_at,
        acceptance=t.acceptance,
        payment_status=t.payment_status,
        payment_requested_at=t.payment_requested_at,
        offer_expires_at=t.offer_expires_at,
    )


def _event_fields(t: Any) -> dict[str, Any]:
    return dict(
        trade_id=t.id,
        lot_id=t.lot_id,
        seller_firm_id=t.seller_firm_id,
        buyer_firm_id=t.buyer_firm_id,
        category=t.category,
        grade=t.grade,
        city_code=t.city_code,
        related_party=t.related_party,
    )


# --- the default ----------------------------------------------------------------------------------------------


def _default(
    uow: UnitOfWork, t: Any, reason: str, note: str | None, now: datetime, cfg: TradingSettings
) -> bool:
    """Put trade `t` (read under its row lock) in default; False if it moved meanwhile (paid, delivered, …)."""
    s = uow.session
    status = m.next_state("default", t.status)
    # the row was read under its lock: any step since (the buyer's payment authorised, a delivery) moved `version`
    cond = [trades.c.id == t.id, trades.c.version == t.version]
    res = s.execute(
        update(trades)
        .where(*cond)
        .values(
            status=status,
            defaulted_at=now,
            default_reason=reason,
            default_note=note,
            payment_status=PAY_CANCELLED if t.payment_request_id else None,
            version=trades.c.version + 1,
        )
    )
    if res.rowcount != 1:
        return False
    if t.payment_request_id:
        from services.contracts.payments import HoldCancelRequested

        uow.emit(
            HoldCancelRequested(
                hold_request_id=t.payment_request_id,
                reason="the buyer defaulted",
                requested_by="trading",
                requested_at=now,
            )
        )
    forfeited = deposits.forfeit(
        uow, t.lot_id, t.buyer_firm_id, owner_of(s, t.seller_firm_id), cfg.fee_bps, now
    )
    s.execute(update(trades).where(trades.c.id == t.id).values(deposit_forfeited_fen=forfeited))
    uow.emit(
        TradeDefaulted(
            **_event_fields(t),
            round=t.round,
            reason=reason,
            price_fen_per_t=t.price_fen_per_t,
            deposit_forfeited_fen=forfeited,
            defaulted_at=now,
        )
    )
    _offer_next(uow, t.lot_id, now, cfg)
    return True


def _offer_next(uow: UnitOfWork, lot_id: str, now: datetime, cfg: TradingSettings) -> str | None:
    """Offer the lot to the next-best bidder that has not had it; none left: return it to the seller."""
    s = uow.session
    lot = s.execute(select(lots).where(lots.c.id == lot_id).with_for_update()).one()
    rounds = s.execute(select(trades.c.round, trades.c.buyer_firm_id).where(trades.c.lot_id == lot_id)).all()
    had_it = {r.buyer_firm_id for r in rounds}
    all_bids = [
        rules.BidFacts(r.id, r.firm_id, r.price_fen_per_t, r.placed_at, r.seq)
        for r in s.execute(
            select(bids.c.id, bids.c.firm_id, bids.c.price_fen_per_t, bids.c.placed_at, bids.c.seq).where(
                bids.c.lot_id == lot_id
            )
        ).all()
    ]
    nxt = d.next_offer(all_bids, lot.reserve_fen_per_t, had_it)
    if nxt is None:
        m.next_state("return_lot", lot.status)
        res = s.execute(
            update(lots)
            .where(lots.c.id == lot_id, lots.c.status == m.LOT_AWARDED)
            .values(status=m.LOT_RETURNED, returned_at=now, version=lots.c.version + 1)
        )
        if res.rowcount == 1:
            from .closing import _release_intake

            _release_intake(s, lot_id)
            uow.emit(
                LotReturned(
                    lot_id=lot_id, seller_firm_id=lot.seller_firm_id, reason="buyer_default", returned_at=now
                )
            )
        return None
    round_no = max(r.round for r in rounds) + 1
    trade_id = m.trade_id_for(lot_id, round_no)
    from .handlers import firms_related

    related = firms_related(s, lot.seller_firm_id, nxt.firm_id)
    expires = now + timedelta(seconds=cfg.offer_deadline_s)
    s.execute(
        trades.insert().values(
            id=trade_id,
            lot_id=lot_id,
            round=round_no,
            bid_id=nxt.bid_id,
            seller_firm_id=lot.seller_firm_id,
            buyer_firm_id=nxt.firm_id,
            category=lot.category,
            grade=lot.grade,
            city_code=lot.city_code,
            qty_kg=lot.qty_kg,
            price_fen_per_t=nxt.price_fen_per_t,
            related_party=related,
            status=m.OFFERED,
            awarded_at=now,  # replaced by the acceptance
            offered_at=now,
            offer_expires_at=expires,
            version=1,
        )
    )
    s.execute(
        update(lots)
        .where(lots.c.id == lot_id)
        .values(
            trade_id=trade_id,
            best_bid_id=nxt.bid_id,
            best_fen_per_t=nxt.price_fen_per_t,
            version=lots.c.version + 1,
        )
    )
    t = s.execute(select(trades).where(trades.c.id == trade_id)).one()
    uow.emit(
        TradeOffered(
            **_event_fields(t),
            round=round_no,
            qty_t=m.kg_to_tonnes_str(lot.qty_kg),
            price_fen_per_t=nxt.price_fen_per_t,
            offered_at=now,
            offer_expires_at=expires,
        )
    )
    return trade_id


def declare_default(
    rt: ServiceRuntime, user: Principal, trade_id: str, note: str, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/trades/{id}/declare-default (seller, or an admin): the buyer did not come to load within
    `collect_deadline_s` of the award, or did not answer the weight or pay within `payment_deadline_s`."""
    cfg = settings_of(rt)

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with Tx(rt) as uow:
            t = _load(uow.session, trade_id, lock=True)
            _party(user, t, "seller", acting=True)
            if t.status == m.DEFAULTED:
                return trade_view(t)  # declared already (by the job or by an earlier request)
            m.next_state("default", t.status)
            f = facts(t)
            refusal = d.may_declare_default(f, at, deadlines(cfg))
            if refusal is not None:
                deadline = d.deadline_of(f, deadlines(cfg))
                raise RuleViolated(
                    refusal.detail,
                    reason=refusal.reason,
                    current_state=t.status,
                    **({"deadline_at": deadline.isoformat()} if deadline else {}),
                )
            by_seller = user.acts_for(t.seller_firm_id, "owner")
            reason = d.DECLARED_BY_SELLER if by_seller else d.DECLARED_BY_ADMIN
            if not _default(uow, t, reason, note, at, cfg):
                raise Conflict("the trade moved on meanwhile", current_state=t.status)
            return trade_view(_load(uow.session, trade_id))

    return retry_on_conflict(write)


# --- the offeree's answer ---------------------------------------------------------------------------------------


def answer_offer(
    rt: ServiceRuntime, user: Principal, trade_id: str, accept: bool, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/trades/{id}/accept-offer | decline-offer (the firm offered the lot)."""
    cfg = settings_of(rt)

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with Tx(rt) as uow:
            s = uow.session
            t = _load(s, trade_id, lock=True)
            _party(user, t, "buyer", admin_ok=False, acting=True)
            if t.round > 1 and t.status == (m.AWARDED if accept else m.DECLINED):
                return trade_view(t)  # the same answer again
            m.next_state("accept_offer" if accept else "decline_offer", t.status)
            if d.offer_lapsed(facts(t), at):  # the deadline job has not got to it yet
                raise RuleViolated("the offer has lapsed", reason="offer_lapsed", current_state=t.status)
            if accept:
                s.execute(
                    update(trades)
                    .where(trades.c.id == trade_id, trades.c.status == m.OFFERED)
                    .values(status=m.AWARDED, awarded_at=at, offer_ended_at=at, version=trades.c.version + 1)
                )
                t = _load(s, trade_id)
                uow.emit(
                    TradeAwarded(
                        **_event_fields(t),
                        qty_t=m.kg_to_tonnes_str(t.qty_kg),
                        price_fen_per_t=t.price_fen_per_t,
                        awarded_at=at,
                    )
                )
            else:
                _end_offer(uow, t, m.DECLINED, at, cfg)
            return trade_view(_load(s, trade_id))

    return retry_on_conflict(write)


def _end_offer(uow: UnitOfWork, t: Any, outcome: str, now: datetime, cfg: TradingSettings) -> bool:
    res = uow.session.execute(
        update(trades)
        .where(trades.c.id == t.id, trades.c.status == m.OFFERED)
        .values(status=outcome, offer_ended_at=now, version=trades.c.version + 1)
    )
    if res.rowcount != 1:
        return False
    uow.emit(TradeOfferEnded(**_event_fields(t), round=t.round, outcome=outcome, ended_at=now))
    _offer_next(uow, t.lot_id, now, cfg)
    return True


# --- the deadline job -------------------------------------------------------------------------------------------


def run_deadlines(rt: ServiceRuntime, now: datetime | None = None) -> dict[str, int]:
    """Default every buyer past its deadline to answer or pay, and lapse every offer past its deadline."""
    cfg = settings_of(rt)
    at = now or datetime.now(UTC)
    due_since = at - timedelta(seconds=cfg.payment_deadline_s)
    out = {"defaulted": 0, "lapsed": 0}
    with rt.db.session(readonly=True) as s:
        overdue = list(
            s.execute(
                select(trades.c.id)
                .where(
                    trades.c.status == m.DELIVERED,
                    or_(
                        and_(trades.c.acceptance == m.ACCEPTANCE_PENDING, trades.c.delivered_at <= due_since),
                        and_(
                            trades.c.payment_status.in_(d.UNPAID), trades.c.payment_requested_at <= due_since
                        ),
                    ),
                )
                .order_by(trades.c.id)
            ).scalars()
        )
        lapsing = list(
            s.execute(
                select(trades.c.id)
                .where(trades.c.status == m.OFFERED, trades.c.offer_expires_at <= at)
                .order_by(trades.c.id)
            ).scalars()
        )
    for trade_id in overdue:
        if _each(
            rt,
            trade_id,
            lambda uow, t: d.payment_overdue(facts(t), at, deadlines(cfg))
            and _default(uow, t, d.PAYMENT_OVERDUE, None, at, cfg),
        ):
            out["defaulted"] += 1
    for trade_id in lapsing:
        if _each(
            rt,
            trade_id,
            lambda uow, t: d.offer_lapsed(facts(t), at) and _end_offer(uow, t, m.LAPSED, at, cfg),
        ):
            out["lapsed"] += 1
    return out


def _each(rt: ServiceRuntime, trade_id: str, act: Any) -> bool:
    """One trade in its own unit of work under its row lock; a failure is logged and left to the next scan."""

    def once() -> bool:
        with Tx(rt) as uow:
            return bool(act(uow, _load(uow.session, trade_id, lock=True)))

    try:
        return retry_on_conflict(once)
    except Exception:  # noqa: BLE001 - one bad trade must not stop the others; the next scan retries it
        log.exception("the deadline of trade %s failed", trade_id)
        return False
