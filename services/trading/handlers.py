"""Trading's commands: one unit of work each (the API, the closing job and the consumers call these).

Contested writes (bids on one lot, the close racing a late bid, two lots taking the same intake) lock the rows
they decide on (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite has one writer at a time) and decide with the pure
rules of `domain/`, so the decision and the write see the same state.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.orm import Session

from services.contracts.trading import LotBestBidChanged, LotListed
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, Forbidden, NotFound, RuleViolated, ValidationFailed
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import leaf

from .domain import model as m
from .domain import rules
from .domain.commands import ListLot, PlaceBid
from .settings import settings_of
from .store import bids, deposits, firm_members, firms, intake, lot_sources, lots


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(ts: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes: every stored time is UTC."""
    if ts is None or ts.tzinfo is not None:
        return ts
    return ts.replace(tzinfo=UTC)


# --- who is acting ----------------------------------------------------------------------------------------


def acting_firm(user: Principal, firm_id: str | None) -> str:
    """The firm the caller acts for as its owner: the one named, or the only one they own."""
    if firm_id is not None:
        if not user.acts_for(firm_id, "owner"):
            raise Forbidden(f"you do not act for firm {firm_id} as its owner", reason="not_firm_member")
        return firm_id
    owned = sorted(f for f, role in user.firm_roles if role == "owner")
    if not owned:
        raise Forbidden("only the owner of a verified firm trades lots", reason="not_firm_member")
    if len(owned) > 1:
        raise ValidationFailed.field("firm_id", f"you own several firms; name one of {owned}")
    return owned[0]


def verified_firm(s: Session, firm_id: str) -> Any:
    return s.execute(select(firms).where(firms.c.firm_id == firm_id)).one_or_none()


def firms_related(s: Session, a: str, b: str) -> bool:
    """One person acts for both firms (their copies of accounts' roles): related parties."""
    if a == b:
        return True
    fa, fb = firm_members.alias("fa"), firm_members.alias("fb")
    return bool(
        s.execute(
            select(exists().where(and_(fa.c.firm_id == a, fb.c.firm_id == b, fa.c.user_id == fb.c.user_id)))
        ).scalar()
    )


# --- listing a lot ----------------------------------------------------------------------------------------


def list_lot(
    rt: ServiceRuntime, user: Principal, cmd: ListLot, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/lots: a verified firm puts a lot up; from intake, the tonnage must be covered by its intake."""
    cfg = settings_of(rt)
    now = now or utcnow()
    firm_id = acting_firm(user, cmd.firm_id)
    cat = leaf(cmd.category)
    if cat.unit != "kg":
        raise ValidationFailed.field(
            "category", f"{cmd.category} is counted in pieces; lots are sold by weight"
        )
    qty_kg = cmd.qty_kg
    if qty_kg > cfg.max_qty_t * m.KG_PER_T:
        raise ValidationFailed.field("qty_t", f"at most {cfg.max_qty_t} tonnes")
    ends_at = cmd.ends_at.astimezone(UTC)
    if ends_at < now + timedelta(seconds=cfg.min_duration_s):
        raise ValidationFailed.field("ends_at", f"a lot runs at least {cfg.min_duration_s} s from now")
    if ends_at > now + timedelta(days=cfg.max_duration_days):
        raise ValidationFailed.field("ends_at", f"a lot runs at most {cfg.max_duration_days} days")
    increment = None
    if cmd.auction == m.ASCENDING:
        increment = cmd.min_increment_fen_per_t or cfg.default_min_increment_fen_per_t
    lot_id = new_id("lot")

    def write() -> dict[str, Any]:
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            if verified_firm(s, firm_id) is None:
                raise Forbidden(f"firm {firm_id} is not verified (yet)", reason="firm_unverified")
            if cmd.source == m.SOURCE_INTAKE:
                _take_intake(s, lot_id, firm_id, cmd.category, qty_kg * m.G_PER_KG)
            s.execute(
                lots.insert().values(
                    id=lot_id,
                    seller_firm_id=firm_id,
                    created_by=user.user_id,
                    category=cmd.category,
                    grade=cmd.grade,
                    qty_kg=qty_kg,
                    city_code=cmd.city_code,
                    reserve_fen_per_t=cmd.reserve_price_fen_per_t,
                    auction=cmd.auction,
                    min_increment_fen_per_t=increment,
                    deposit_fen=cmd.deposit_fen,
                    source=cmd.source,
                    purchase_ref=cmd.purchase_ref,
                    status=m.LOT_OPEN,
                    listed_at=now,
                    original_ends_at=ends_at,
                    ends_at=ends_at,
                    extensions=0,
                    bid_count=0,
                    version=1,
                )
            )
            uow.emit(
                LotListed(
                    lot_id=lot_id,
                    seller_firm_id=firm_id,
                    category=cmd.category,
                    grade=cmd.grade,
                    qty_t=m.kg_to_tonnes_str(qty_kg),
                    city_code=cmd.city_code,
                    auction=cmd.auction,
                    reserve_price_fen_per_t=cmd.reserve_price_fen_per_t,
                    min_increment_fen_per_t=increment,
                    deposit_fen=cmd.deposit_fen,
                    source_kind=cmd.source,
                    ends_at=ends_at,
                    listed_at=now,
                )
            )
        return {"id": lot_id, "status": m.LOT_OPEN, "ends_at": ends_at}

    return retry_on_conflict(write)


def _take_intake(s: Session, lot_id: str, firm_id: str, category: str, need_g: int) -> None:
    """Cover the lot from the firm's intake of the category not yet in a lot, oldest first (rows locked)."""
    rows = s.execute(
        select(intake.c.pickup_id, intake.c.line_no, intake.c.qty_g, intake.c.allocated_g)
        .where(
            intake.c.firm_id == firm_id, intake.c.category == category, intake.c.allocated_g < intake.c.qty_g
        )
        .order_by(intake.c.settled_at, intake.c.pickup_id, intake.c.line_no)
        .with_for_update()
    ).all()
    lines = [rules.IntakeLine(r.pickup_id, r.line_no, r.qty_g - r.allocated_g) for r in rows]
    taken = rules.allocate_intake(lines, need_g)
    if taken is None:
        have = sum(ln.available_g for ln in lines) // m.G_PER_KG
        raise RuleViolated(
            f"the firm's settled intake of {category} not yet in a lot is {m.kg_to_tonnes_str(have)} t; list "
            f'at most that, or declare the lot as source "purchase" with its purchase_ref',
            reason="exceeds_intake",
            field="qty_t",
            available_t=m.kg_to_tonnes_str(have),
        )
    for line, g in taken:
        s.execute(
            update(intake)
            .where(intake.c.pickup_id == line.pickup_id, intake.c.line_no == line.line_no)
            .values(allocated_g=intake.c.allocated_g + g)
        )
        s.execute(
            lot_sources.insert().values(
                lot_id=lot_id, pickup_id=line.pickup_id, line_no=line.line_no, qty_g=g, released=False
            )
        )


# --- bids -------------------------------------------------------------------------------------------------


def place_bid(
    rt: ServiceRuntime, user: Principal, lot_id: str, cmd: PlaceBid, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/lots/{id}/bids: judged under the lot's row lock, so concurrent bids see each other."""
    firm_id = acting_firm(user, cmd.firm_id)
    auction_rules = settings_of(rt).rules

    def write() -> dict[str, Any]:
        with UnitOfWork(rt.db) as uow:
            s = uow.session
            lot = s.execute(select(lots).where(lots.c.id == lot_id).with_for_update()).one_or_none()
            if lot is None:
                raise NotFound(f"no lot with id {lot_id}")
            # the bid's time is taken under the lock: bids of one lot are timed in the order they are judged
            at = now or utcnow()
            facts = _lot_facts(lot)
            bidder = rules.BidderFacts(
                firm_id=firm_id,
                verified=verified_firm(s, firm_id) is not None,
                related_to_seller=firm_id != lot.seller_firm_id
                and firms_related(s, lot.seller_firm_id, firm_id),
                deposit_held=lot.deposit_fen == 0 or _deposit_held(s, lot_id, firm_id),
            )
            verdict = rules.judge_bid(facts, bidder, cmd.price_fen_per_t, at, auction_rules)
            if isinstance(verdict, rules.Refusal):
                status = 409 if verdict.reason == "lot_closed" else None
                raise _refused(verdict, status, lot)
            bid_id = new_id("bid")
            s.execute(
                bids.insert().values(
                    id=bid_id,
                    lot_id=lot_id,
                    firm_id=firm_id,
                    user_id=user.user_id,
                    price_fen_per_t=cmd.price_fen_per_t,
                    placed_at=at,
                    below_reserve=verdict.below_reserve,
                    extended=verdict.extended,
                    ends_at_after=verdict.ends_at,
                )
            )
            values: dict[str, Any] = dict(bid_count=lots.c.bid_count + 1, version=lots.c.version + 1)
            if verdict.becomes_best:
                values.update(best_bid_id=bid_id, best_fen_per_t=cmd.price_fen_per_t, ends_at=verdict.ends_at)
            if verdict.extended:
                values["extensions"] = lots.c.extensions + 1
            s.execute(update(lots).where(lots.c.id == lot_id).values(**values))
            if verdict.becomes_best:
                uow.emit(
                    LotBestBidChanged(
                        lot_id=lot_id,
                        price_fen_per_t=cmd.price_fen_per_t,
                        bid_count=lot.bid_count + 1,
                        ends_at=verdict.ends_at,
                        extended=verdict.extended,
                        placed_at=at,
                    )
                )
        out: dict[str, Any] = {
            "id": bid_id,
            "lot_id": lot_id,
            "firm_id": firm_id,
            "price_fen_per_t": cmd.price_fen_per_t,
            "placed_at": at,
            "lot_ends_at": verdict.ends_at,
            "extended": verdict.extended,
        }
        if lot.auction == m.SEALED:
            out["below_reserve"] = verdict.below_reserve
        else:
            out["best"] = True
        return out

    return retry_on_conflict(write)


def _refused(verdict: rules.Refusal, status: int | None, lot: Any) -> Exception:
    if status == 409:
        return Conflict(
            verdict.detail,
            current_state=lot.status if lot.status != m.LOT_OPEN else "ended",
            reason=verdict.reason,
        )
    if verdict.reason in ("own_lot", "firm_unverified", "related_firm"):
        return RuleViolated(verdict.detail, reason=verdict.reason)
    extra: dict[str, Any] = {}
    if verdict.reason == "below_best_plus_increment":
        extra["min_price_fen_per_t"] = lot.best_fen_per_t + lot.min_increment_fen_per_t
    if verdict.reason == "below_reserve":
        extra["min_price_fen_per_t"] = lot.reserve_fen_per_t
    return RuleViolated(verdict.detail, reason=verdict.reason, field="price_fen_per_t", **extra)


def _lot_facts(lot: Any) -> rules.LotFacts:
    return rules.LotFacts(
        lot_id=lot.id,
        seller_firm_id=lot.seller_firm_id,
        status=lot.status,
        auction=lot.auction,
        reserve_fen_per_t=lot.reserve_fen_per_t,
        min_increment_fen_per_t=lot.min_increment_fen_per_t or 0,
        ends_at=aware(lot.ends_at),
        best_fen_per_t=lot.best_fen_per_t,
        deposit_fen=lot.deposit_fen,
    )


def _deposit_held(s: Session, lot_id: str, firm_id: str) -> bool:
    status = s.execute(
        select(deposits.c.status).where(deposits.c.lot_id == lot_id, deposits.c.firm_id == firm_id)
    ).scalar()
    return status == "held"


# --- reading lots -----------------------------------------------------------------------------------------


def lot_view(row: Any, *, reveal: bool) -> dict[str, Any]:
    """A lot as anyone signed in sees it. Sealed lots show no price until the close (`reveal` is for the seller
    and admins after the close)."""
    ascending = row.auction == m.ASCENDING
    out = {
        "id": row.id,
        "status": row.status,
        "seller_firm_id": row.seller_firm_id,
        "category": row.category,
        "grade": row.grade,
        "qty_t": m.kg_to_tonnes_str(row.qty_kg),
        "city_code": row.city_code,
        "reserve_price_fen_per_t": row.reserve_fen_per_t,
        "auction": row.auction,
        "min_increment_fen_per_t": row.min_increment_fen_per_t,
        "deposit_fen": row.deposit_fen,
        "source": row.source,
        "purchase_ref": row.purchase_ref,
        "listed_at": aware(row.listed_at),
        "ends_at": aware(row.ends_at),
        "original_ends_at": aware(row.original_ends_at),
        "extensions": row.extensions,
        "bid_count": row.bid_count,
        "best_price_fen_per_t": row.best_fen_per_t
        if ascending or row.status != m.LOT_OPEN or reveal
        else None,
        "trade_id": row.trade_id,
        "closed_at": aware(row.closed_at),
    }
    if ascending:
        out["next_min_price_fen_per_t"] = (
            row.reserve_fen_per_t
            if row.best_fen_per_t is None
            else row.best_fen_per_t + row.min_increment_fen_per_t
        )
    return out


def get_lot(rt: ServiceRuntime, user: Principal, lot_id: str) -> dict[str, Any]:
    with rt.db.session(readonly=True) as s:
        row = s.execute(select(lots).where(lots.c.id == lot_id)).one_or_none()
        if row is None:
            raise NotFound(f"no lot with id {lot_id}")
        out = lot_view(row, reveal=False)
        mine = [f for f in user.firm_ids]
        if mine:
            own = s.execute(
                select(
                    bids.c.id, bids.c.firm_id, bids.c.price_fen_per_t, bids.c.placed_at, bids.c.below_reserve
                )
                .where(bids.c.lot_id == lot_id, bids.c.firm_id.in_(mine))
                .order_by(bids.c.seq)
            ).all()
            out["your_bids"] = [
                dict(
                    id=b.id,
                    firm_id=b.firm_id,
                    price_fen_per_t=b.price_fen_per_t,
                    placed_at=aware(b.placed_at),
                    below_reserve=b.below_reserve,
                )
                for b in own
            ]
    return out


def list_lots(rt: ServiceRuntime, q: Any) -> dict[str, Any]:
    cfg = settings_of(rt)
    limit = min(q.limit or cfg.list_default_limit, cfg.list_max_limit)
    stmt = select(lots)
    if q.status:
        stmt = stmt.where(lots.c.status == q.status)
    if q.category:
        stmt = stmt.where(lots.c.category == q.category)
    if q.seller_firm_id:
        stmt = stmt.where(lots.c.seller_firm_id == q.seller_firm_id)
    if q.cursor:
        stmt = stmt.where(lots.c.id < q.cursor)
    with rt.db.session(readonly=True) as s:
        rows = s.execute(stmt.order_by(lots.c.id.desc()).limit(limit + 1)).all()
    items = [lot_view(r, reveal=False) for r in rows[:limit]]
    return {"items": items, "next_cursor": rows[limit - 1].id if len(rows) > limit else None}


def count_bids(s: Session, lot_id: str) -> int:
    return int(s.execute(select(func.count()).select_from(bids).where(bids.c.lot_id == lot_id)).scalar() or 0)
