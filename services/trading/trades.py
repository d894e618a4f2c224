"""After the award: delivery on the weighbridge ticket, the buyer's acceptance or dispute, and the chain of custody.

Settlement (the buyer pays, the seller is paid less the fee) starts once a delivery needs no more acceptance; see
settlement.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, Forbidden, NotFound, RuleViolated
from services.kernel.runtime import ServiceRuntime

from .domain import model as m
from .domain import rules
from .domain.commands import DisputeDelivery, RecordDelivery
from .settings import settings_of
from .store import intake, lot_sources, lots, trades


def _party(user: Principal, trade: Any, *as_: str, admin_ok: bool = True, acting: bool = False) -> None:
    """The caller acts for a side of the trade (`as_`: "seller", "buyer"), or is an admin when `admin_ok`.
    `acting`: a step that commits the firm (a weight, an answer, a default) is its owner's, as listing and bidding
    are; its accountants and collectors read the trade but do not move it (one may work for both sides)."""
    sides = {"seller": trade.seller_firm_id, "buyer": trade.buyer_firm_id}
    firm_roles = ("owner",) if acting else ()
    if any(user.acts_for(sides[side], *firm_roles) for side in as_ or sides):
        return
    if admin_ok and user.has("admin"):
        return
    who = " or ".join(as_) if as_ else "a party"
    if acting:
        who = f"the owner of the {who} firm"
    raise Forbidden(f"only {who} of trade {trade.id} may do this", reason="not_party")


def _load(s: Any, trade_id: str, lock: bool = False) -> Any:
    stmt = select(trades).where(trades.c.id == trade_id)
    row = s.execute(stmt.with_for_update() if lock else stmt).one_or_none()
    if row is None:
        raise NotFound(f"no trade with id {trade_id}")
    return row


def trade_view(t: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": t.id,
        "lot_id": t.lot_id,
        "seller_firm_id": t.seller_firm_id,
        "buyer_firm_id": t.buyer_firm_id,
        "category": t.category,
        "grade": t.grade,
        "city_code": t.city_code,
        "qty_t": m.kg_to_tonnes_str(t.qty_kg),
        "price_fen_per_t": t.price_fen_per_t,
        "status": t.status,
        "round": t.round,
        "awarded_at": None if t.status in (m.OFFERED, m.DECLINED, m.LAPSED) else t.awarded_at,
        "related_party": t.related_party,
        "delivery": None,
        "settlement": None,
        "offer": None,
        "default": None,
    }
    if t.offered_at is not None:
        out["offer"] = {
            "offered_at": t.offered_at,
            "expires_at": t.offer_expires_at,
            "ended_at": t.offer_ended_at,
        }
    if t.defaulted_at is not None:
        out["default"] = {
            "reason": t.default_reason,
            "note": t.default_note,
            "defaulted_at": t.defaulted_at,
            "deposit_forfeited_fen": t.deposit_forfeited_fen or 0,
        }
    if t.delivered_kg is not None:
        out["delivery"] = {
            "weighbridge_ticket_no": t.weighbridge_ticket_no,
            "delivered_qty_t": m.kg_to_tonnes_str(t.delivered_kg),
            "amount_fen": t.amount_fen,
            "fee_fen": t.fee_fen,
            "within_tolerance": t.within_tolerance,
            "deviation_pct": t.deviation_pct,
            "acceptance": t.acceptance,
            "delivered_at": t.delivered_at,
            "accepted_at": t.accepted_at,
            "disputed_at": t.disputed_at,
            "dispute_reason": t.dispute_reason,
        }
    if t.payment_request_id is not None:
        out["settlement"] = {
            "payment_id": t.payment_request_id,
            "payment_status": t.payment_status,
            "requested_at": t.payment_requested_at,
            "amount_fen": t.amount_fen,
            "fee_fen": t.fee_fen,
            "seller_receives_fen": (t.amount_fen or 0) - (t.fee_fen or 0),
            "payout_id": t.payout_id,
            "settled_at": t.settled_at,
        }
    return out


def get_trade(rt: ServiceRuntime, user: Principal, trade_id: str) -> dict[str, Any]:
    with rt.db.session(readonly=True) as s:
        t = _load(s, trade_id)
    _party(user, t)
    return trade_view(t)


def list_trades(rt: ServiceRuntime, user: Principal, q: Any) -> dict[str, Any]:
    """The trades of the firms the caller acts for (as seller or buyer), newest first; admins see all."""
    cfg = settings_of(rt)
    limit = min(q.limit or cfg.list_default_limit, cfg.list_max_limit)
    stmt = select(trades)
    if not user.has("admin"):
        mine = sorted(user.firm_ids)
        stmt = stmt.where(trades.c.seller_firm_id.in_(mine) | trades.c.buyer_firm_id.in_(mine))
    if q.status:
        stmt = stmt.where(trades.c.status == q.status)
    if q.cursor:
        stmt = stmt.where(trades.c.id < q.cursor)
    with rt.db.session(readonly=True) as s:
        rows = s.execute(stmt.order_by(trades.c.id.desc()).limit(limit + 1)).all()
    return {
        "items": [trade_view(t) for t in rows[:limit]],
        "next_cursor": rows[limit - 1].id if len(rows) > limit else None,
    }


def record_delivery(
    rt: ServiceRuntime, user: Principal, trade_id: str, cmd: RecordDelivery, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/trades/{id}/delivery (seller): the amount on the weighbridge weight. Outside the tolerance the
    buyer accepts (or disputes) first; within it, payment is requested at once."""
    cfg = settings_of(rt)
    from .settlement import request_payment

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            t = _load(s, trade_id, lock=True)
            _party(user, t, "seller", admin_ok=False, acting=True)
            if (
                t.status != m.DISPUTED
                and t.weighbridge_ticket_no == cmd.weighbridge_ticket_no
                and t.delivered_kg == cmd.delivered_kg
            ):
                return trade_view(t)  # the same ticket again: nothing changes
            status = m.next_state("deliver", t.status)
            low, high = rules.delivery_range_kg(t.qty_kg, cfg.max_delivery_deviation_pct)
            if not low <= cmd.delivered_kg <= high:
                raise RuleViolated(
                    f"a weighbridge weight of {cmd.delivered_qty_t} t is not a delivery of this lot of "
                    f"{m.kg_to_tonnes_str(t.qty_kg)} t: it lies between {m.kg_to_tonnes_str(low)} and "
                    f"{m.kg_to_tonnes_str(high)} t (±{cfg.max_delivery_deviation_pct} %)",
                    reason="delivery_out_of_range",
                    field="delivered_qty_t",
                    min_qty_t=m.kg_to_tonnes_str(low),
                    max_qty_t=m.kg_to_tonnes_str(high),
                )
            # a ticket is one weighing: the seller's ticket of another lot's goods does not weigh this one (the
            # same lot's next round, after a buyer's default, may stand on the weighing it had)
            other = s.execute(
                select(trades.c.id)
                .where(
                    trades.c.seller_firm_id == t.seller_firm_id,
                    trades.c.weighbridge_ticket_no == cmd.weighbridge_ticket_no,
                    trades.c.lot_id != t.lot_id,
                )
                .limit(1)
            ).scalar()
            if other is not None:
                raise RuleViolated(
                    f"weighbridge ticket {cmd.weighbridge_ticket_no} weighed the delivery of trade {other}",
                    reason="ticket_used",
                    field="weighbridge_ticket_no",
                    trade_id=other,
                )
            o = rules.delivery_outcome(
                declared_kg=t.qty_kg,
                delivered_kg=cmd.delivered_kg,
                price_fen_per_t=t.price_fen_per_t,
                tolerance_pct=cfg.tolerance_pct,
                fee_bps=cfg.fee_bps,
            )
            acceptance = m.ACCEPTANCE_NOT_REQUIRED if o.within_tolerance else m.ACCEPTANCE_PENDING
            s.execute(
                update(trades)
                .where(trades.c.id == trade_id)
                .values(
                    status=status,
                    weighbridge_ticket_no=cmd.weighbridge_ticket_no,
                    delivered_kg=cmd.delivered_kg,
                    amount_fen=o.amount_fen,
                    fee_fen=o.fee_fen,
                    within_tolerance=o.within_tolerance,
                    deviation_pct=str(o.deviation_pct),
                    acceptance=acceptance,
                    delivered_at=at,
                    accepted_at=None,
                    disputed_at=None,
                    dispute_reason=None,
                    version=trades.c.version + 1,
                )
            )
            if o.within_tolerance:
                request_payment(uow, trade_id, at)
            t = _load(s, trade_id)
        return trade_view(t)

    return delivery_reply(retry_on_conflict(write))


def accept_delivery(rt: ServiceRuntime, user: Principal, trade_id: str, now: datetime | None = None) -> dict:
    """POST /v1/trades/{id}/accept-delivery (buyer): the weight outside the tolerance is accepted; payment is
    requested."""
    from .settlement import request_payment

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            t = _load(s, trade_id, lock=True)
            _party(user, t, "buyer", admin_ok=False, acting=True)
            if t.acceptance == m.ACCEPTED:
                return trade_view(t)  # accepted already
            m.next_state("accept_delivery", t.status)
            if t.acceptance != m.ACCEPTANCE_PENDING:
                raise Conflict(
                    "this delivery needs no acceptance", current_state=t.status, acceptance=t.acceptance
                )
            s.execute(
                update(trades)
                .where(trades.c.id == trade_id)
                .values(acceptance=m.ACCEPTED, accepted_at=at, version=trades.c.version + 1)
            )
            request_payment(uow, trade_id, at)
            t = _load(s, trade_id)
        return trade_view(t)

    return delivery_reply(retry_on_conflict(write))


def dispute_delivery(
    rt: ServiceRuntime, user: Principal, trade_id: str, cmd: DisputeDelivery, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/trades/{id}/dispute-delivery (buyer): the weight outside the tolerance is not accepted; the seller
    may deliver again with a new weighbridge ticket."""

    def write() -> dict[str, Any]:
        at = now or datetime.now(UTC)
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            t = _load(s, trade_id, lock=True)
            _party(user, t, "buyer", admin_ok=False, acting=True)
            status = m.next_state("dispute_delivery", t.status)
            if t.acceptance != m.ACCEPTANCE_PENDING:
                raise Conflict(
                    "only a delivery outside the tolerance can be disputed",
                    current_state=t.status,
                    acceptance=t.acceptance,
                )
            s.execute(
                update(trades)
                .where(trades.c.id == trade_id)
                .values(
                    status=status, disputed_at=at, dispute_reason=cmd.reason, version=trades.c.version + 1
                )
            )
            t = _load(s, trade_id)
        return trade_view(t)

    return retry_on_conflict(write)


def delivery_reply(view: dict[str, Any]) -> dict[str, Any]:
    """The API's delivery reply: `{status, amount_fen}` first, then the whole trade."""
    d = view.get("delivery") or {}
    return {"status": view["status"], "amount_fen": d.get("amount_fen"), **view}


# --- chain of custody -------------------------------------------------------------------------------------


def trace(rt: ServiceRuntime, user: Principal, lot_id: str) -> dict[str, Any]:
    """GET /v1/lots/{id}/trace: intake (the settled pickups that fed the lot) → lot → trade → delivery, with the
    quantities checked against each other."""
    with rt.db.session(readonly=True) as s:
        lot = s.execute(select(lots).where(lots.c.id == lot_id)).one_or_none()
        if lot is None:
            raise NotFound(f"no lot with id {lot_id}")
        rounds = s.execute(select(trades).where(trades.c.lot_id == lot_id).order_by(trades.c.round)).all()
        t = next((r for r in rounds if r.id == lot.trade_id), None)  # the current round
        sources = s.execute(
            select(
                lot_sources.c.pickup_id,
                lot_sources.c.line_no,
                lot_sources.c.qty_g,
                lot_sources.c.released,
                intake.c.category,
                intake.c.qty_g.label("line_g"),
                intake.c.collector_id,
                intake.c.settled_at,
                intake.c.city_code,
            )
            .join(
                intake,
                (intake.c.pickup_id == lot_sources.c.pickup_id) & (intake.c.line_no == lot_sources.c.line_no),
            )
            .where(lot_sources.c.lot_id == lot_id)
            .order_by(intake.c.settled_at, lot_sources.c.pickup_id, lot_sources.c.line_no)
        ).all()
    if not (
        user.acts_for(lot.seller_firm_id)
        or any(user.acts_for(r.buyer_firm_id) for r in rounds)
        or user.has("admin")
    ):
        raise Forbidden("the trace of a lot is for its seller, its buyers and admins", reason="not_party")
    used_g = sum(r.qty_g for r in sources if not r.released)
    lot_g = lot.qty_kg * m.G_PER_KG
    from_purchase_g = lot_g if lot.source == m.SOURCE_PURCHASE else 0
    delivery_ok = None
    delivered = None
    if t is not None and t.delivered_kg is not None and t.status != m.DEFAULTED:  # weighed, never paid: kept
        delivered = t.delivered_kg
        delivery_ok = bool(t.within_tolerance) or t.acceptance == m.ACCEPTED
    covered = used_g + from_purchase_g == lot_g or lot.status in (m.LOT_UNSOLD, m.LOT_RETURNED)
    return {
        "lot": {
            "id": lot.id,
            "status": lot.status,
            "seller_firm_id": lot.seller_firm_id,
            "category": lot.category,
            "grade": lot.grade,
            "qty_t": m.kg_to_tonnes_str(lot.qty_kg),
            "city_code": lot.city_code,
            "source": lot.source,
            "purchase_ref": lot.purchase_ref,
            "listed_at": lot.listed_at,
            "closed_at": lot.closed_at,
            "returned_at": lot.returned_at,
        },
        "intake": [
            {
                "pickup_id": r.pickup_id,
                "line_no": r.line_no,
                "category": r.category,
                "collector_id": r.collector_id,
                "city_code": r.city_code,
                "settled_at": r.settled_at,
                "pickup_qty_t": _g_to_t(r.line_g),
                "used_qty_t": _g_to_t(r.qty_g),
                "released": r.released,
            }
            for r in sources
        ],
        "purchase": (
            {"purchase_ref": lot.purchase_ref, "qty_t": m.kg_to_tonnes_str(lot.qty_kg)}
            if lot.source == m.SOURCE_PURCHASE
            else None
        ),
        "trade": None
        if t is None
        else {
            "id": t.id,
            "buyer_firm_id": t.buyer_firm_id,
            "price_fen_per_t": t.price_fen_per_t,
            "status": t.status,
            "awarded_at": t.awarded_at,
            "related_party": t.related_party,
        },
        # every round: the award, and after a default the second-chance offers, each with its outcome
        "rounds": [
            {
                "round": r.round,
                "trade_id": r.id,
                "buyer_firm_id": r.buyer_firm_id,
                "price_fen_per_t": r.price_fen_per_t,
                "status": r.status,
                "offer": trade_view(r)["offer"],
                "default": trade_view(r)["default"],
            }
            for r in rounds
        ],
        "delivery": None if t is None or t.delivered_kg is None else trade_view(t)["delivery"],
        "settlement": None if t is None else trade_view(t)["settlement"],
        "reconciliation": {
            "lot_qty_t": m.kg_to_tonnes_str(lot.qty_kg),
            "from_intake_t": _g_to_t(used_g),
            "from_purchase_t": _g_to_t(from_purchase_g),
            "delivered_qty_t": None if delivered is None else m.kg_to_tonnes_str(delivered),
            "covered": covered,
            "delivery_within_tolerance_or_accepted": delivery_ok,
            "reconciles": covered and delivery_ok is not False,
        },
    }


def _g_to_t(g: int) -> str:
    """Grams as tonnes: 3 places (kilograms) when whole, else 6 (an intake line weighed to the gram)."""
    if g % m.G_PER_KG == 0:
        return m.kg_to_tonnes_str(g // m.G_PER_KG)
    return f"{Decimal(g) / 1_000_000:.6f}"
