"""Trading's commands: one unit of work each (the API, the closing job and the consumers call these).

Contested writes (bids on one lot, the close racing a late bid, two lots taking the same intake) lock the rows
they decide on (`SELECT ... FOR UPDATE` on PostgreSQL; SQLite has one writer at a time) and decide with the pure
rules of `domain/`, so the decision and the write see the same state.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, and_, bindparam, exists, func, select, update
from sqlalchemy.orm import Session

from services.contracts.trading import LotBestBidChanged, LotListed
from services.kernel import idempotency
from services.kernel.auth import Principal
from services.kernel.db import retry_on_conflict
from services.kernel.errors import Forbidden, NotFound, RuleViolated, ValidationFailed
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import leaf

from .domain import model as m
from .domain import rules
from .domain.commands import ListLot, PlaceBid
from .feed import Tx, publish_local
from .settings import settings_of
from .store import bids, deposits, firm_members, firms, intake, lot_sources, lots

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
    now = now or datetime.now(UTC)
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
        with Tx(rt) as uow:
            s = uow.session
            idempotency.made(lot_id)
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


def listed(rt: ServiceRuntime, user: Principal, lot_id: str) -> dict[str, Any]:
    """`list_lot`'s reply for the lot it listed (its reply lost after the commit), as the lot stands."""
    with rt.db.session(readonly=True) as s:
        lot = s.execute(
            select(lots.c.id, lots.c.status, lots.c.ends_at).where(
                lots.c.id == lot_id, lots.c.created_by == user.user_id
            )
        ).first()
    if lot is None:
        raise NotFound(f"no lot of yours with id {lot_id}")
    return {"id": lot.id, "status": lot.status, "ends_at": lot.ends_at}


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


# Statements of the bid path, built once (building a statement per call costs more than running it).
_LOT_FOR_BID = (
    select(
        lots.c.id,
        lots.c.seller_firm_id,
        lots.c.status,
        lots.c.auction,
        lots.c.reserve_fen_per_t,
        lots.c.min_increment_fen_per_t,
        lots.c.ends_at,
        lots.c.best_fen_per_t,
        lots.c.deposit_fen,
        lots.c.bid_count,
    )
    .where(lots.c.id == bindparam("lot_id"))
    .with_for_update()
)
_fa, _fb = firm_members.alias("fa"), firm_members.alias("fb")
# the bidder's facts in one round trip: verified, related to the seller, its deposit on this lot
_BIDDER = select(
    exists().where(firms.c.firm_id == bindparam("bidder")).label("verified"),
    exists()
    .where(
        _fa.c.firm_id == bindparam("seller"),
        _fb.c.firm_id == bindparam("bidder"),
        _fa.c.user_id == _fb.c.user_id,
    )
    .label("related"),
    select(deposits.c.status)
    .where(deposits.c.lot_id == bindparam("lot_id"), deposits.c.firm_id == bindparam("bidder"))
    .scalar_subquery()
    .label("deposit"),
)
_NEW_BEST = (
    update(lots)
    .where(lots.c.id == bindparam("lid"))
    .values(
        bid_count=lots.c.bid_count + 1,
        version=lots.c.version + 1,
        best_bid_id=bindparam("new_bid_id"),
        best_fen_per_t=bindparam("new_best"),
        ends_at=bindparam("new_ends_at"),
        extensions=lots.c.extensions + bindparam("ext", type_=Integer),
    )
)
_COUNTED = (
    update(lots)
    .where(lots.c.id == bindparam("lid"))
    .values(bid_count=lots.c.bid_count + 1, version=lots.c.version + 1)
)


@dataclass(frozen=True)
class BidOutcome:
    lot: Any
    verdict: rules.BidAccepted | rules.Refusal
    bid: dict[str, Any] | None


def bid_write(
    rt: ServiceRuntime, firm_id: str, user_id: str, lot_id: str, price: int, now: datetime | None
) -> Any:
    """The group-commit job of a bid: read the lot under its row lock, judge, write. A refusal is returned (not
    raised), so it never rolls back the other bids of its batch."""
    auction_rules = settings_of(rt).rules

    def write(uow: Any) -> BidOutcome:
        conn = uow.conn
        lot = conn.execute(_LOT_FOR_BID, {"lot_id": lot_id}).one_or_none()
        if lot is None:
            raise NotFound(f"no lot with id {lot_id}")
        at = now or datetime.now(
            UTC
        )  # timed under the lock: bids of one lot are timed in the order they are judged
        facts = _lot_facts(lot)
        who = conn.execute(_BIDDER, {"bidder": firm_id, "seller": lot.seller_firm_id, "lot_id": lot_id}).one()
        bidder = rules.BidderFacts(
            firm_id=firm_id,
            verified=bool(who.verified),
            related_to_seller=firm_id != lot.seller_firm_id and bool(who.related),
            deposit_held=lot.deposit_fen == 0 or who.deposit == "held",
        )
        verdict = rules.judge_bid(facts, bidder, price, at, auction_rules)
        if isinstance(verdict, rules.Refusal):
            return BidOutcome(lot, verdict, None)
        bid = dict(
            id=idempotency.made(new_id("bid")),
            lot_id=lot_id,
            firm_id=firm_id,
            user_id=user_id,
            price_fen_per_t=price,
            placed_at=at,
            below_reserve=verdict.below_reserve,
            extended=verdict.extended,
            ends_at_after=verdict.ends_at,
        )
        uow.insert(bids, bid)
        if verdict.becomes_best:
            conn.execute(
                _NEW_BEST,
                {
                    "lid": lot_id,
                    "new_bid_id": bid["id"],
                    "new_best": price,
                    "new_ends_at": verdict.ends_at,
                    "ext": int(verdict.extended),
                },
            )
            uow.emit(
                LotBestBidChanged(
                    lot_id=lot_id,
                    price_fen_per_t=price,
                    bid_count=lot.bid_count + 1,
                    ends_at=verdict.ends_at,
                    extended=verdict.extended,
                    placed_at=at,
                )
            )
        else:
            conn.execute(_COUNTED, {"lid": lot_id})
        return BidOutcome(lot, verdict, bid)

    return write


def bid_reply(outcome: BidOutcome) -> dict[str, Any]:
    lot, verdict, bid = outcome.lot, outcome.verdict, outcome.bid
    if isinstance(verdict, rules.Refusal):
        raise _refused(verdict, lot)
    assert bid is not None
    return _bid_view(lot.auction, bid)


def _bid_view(auction: str, bid: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": bid["id"],
        "lot_id": bid["lot_id"],
        "firm_id": bid["firm_id"],
        "price_fen_per_t": bid["price_fen_per_t"],
        "placed_at": bid["placed_at"],
        "lot_ends_at": bid["ends_at_after"],
        "extended": bid["extended"],
    }
    if auction == m.SEALED:
        out["below_reserve"] = bid["below_reserve"]
    else:
        out["best"] = True  # a bid on an ascending lot is placed only as the new best
    return out


def bid_placed(rt: ServiceRuntime, user: Principal, lot_id: str, bid_id: str) -> dict[str, Any]:
    """`place_bid`'s reply for the bid it placed (its reply lost after the commit)."""
    with rt.db.session(readonly=True) as s:
        row = s.execute(
            select(bids, lots.c.auction)
            .join(lots, lots.c.id == bids.c.lot_id)
            .where(bids.c.id == bid_id, bids.c.lot_id == lot_id, bids.c.user_id == user.user_id)
        ).first()
    if row is None:
        raise NotFound(f"no bid of yours with id {bid_id}")
    return _bid_view(row.auction, row._mapping)


def place_bid(
    rt: ServiceRuntime, user: Principal, lot_id: str, cmd: PlaceBid, now: datetime | None = None
) -> dict[str, Any]:
    """POST /v1/lots/{id}/bids: judged under the lot's row lock, so concurrent bids see each other; written by the
    database's group-commit writer (one transaction and one commit for the bids waiting at that moment)."""
    firm_id = acting_firm(user, cmd.firm_id)
    outcome, events = rt.db.writer.submit(
        bid_write(rt, firm_id, user.user_id, lot_id, cmd.price_fen_per_t, now), "lot:" + lot_id
    ).result()
    publish_local(rt, events)
    return bid_reply(outcome)


async def place_bid_async(rt: ServiceRuntime, user: Principal, lot_id: str, cmd: PlaceBid) -> dict[str, Any]:
    """`place_bid` for the HTTP route: the event loop hands the job straight to the group-commit writer."""
    firm_id = acting_firm(user, cmd.firm_id)
    outcome, events = await asyncio.wrap_future(
        rt.db.writer.submit(
            bid_write(rt, firm_id, user.user_id, lot_id, cmd.price_fen_per_t, None), "lot:" + lot_id
        )
    )
    publish_local(rt, events)
    return bid_reply(outcome)


def _refused(verdict: rules.Refusal, lot: Any) -> Exception:
    """A refused bid: 422 with the rule's `reason` (API.md lists a closed lot among them)."""
    if verdict.reason == "lot_closed":
        # the lot's status, or "ended" for an open lot whose end has passed and that the job has not closed yet
        return RuleViolated(
            verdict.detail,
            reason=verdict.reason,
            current_state=lot.status if lot.status != m.LOT_OPEN else "ended",
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
        ends_at=lot.ends_at,
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
    """A lot as anyone signed in sees it. Sealed lots show no price, nor how many bids they have, until the close
    (`reveal` is for the seller and admins after the close): how many compete is what a bidder would price on."""
    ascending = row.auction == m.ASCENDING
    sealed_open = not ascending and row.status == m.LOT_OPEN and not reveal
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
        "listed_at": row.listed_at,
        "ends_at": row.ends_at,
        "original_ends_at": row.original_ends_at,
        "extensions": row.extensions,
        "bid_count": None if sealed_open else row.bid_count,
        "best_price_fen_per_t": row.best_fen_per_t
        if ascending or row.status != m.LOT_OPEN or reveal
        else None,
        "trade_id": row.trade_id,
        "closed_at": row.closed_at,
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
                    placed_at=b.placed_at,
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
