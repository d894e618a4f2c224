"""Booking's reads: a pickup, the caller's pickups, a pickup's complaints. Each is one read-only unit of work
that checks who may see what; commands and their guards are in handlers.py."""

from __future__ import annotations

from sqlalchemy import and_, or_, select

from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork
from services.kernel.errors import Forbidden, NotFound, ValidationFailed
from services.kernel.runtime import ServiceRuntime

from .domain import model as m
from .domain.commands import PickupsQuery
from .handlers import AcceptOutcome, accept_reply, is_admin, is_collector, is_resident, lines_of, load
from .store import complaints, pickup_lines, pickups, ratings
from .views import complaint_view, pickup_view, rating_view


def get(rt: ServiceRuntime, principal: Principal, pickup_id: str) -> dict:
    """The resident who booked it, the collector who accepted it, or an admin."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        view = _visible(rt, uow, principal, pickup_id)
        view["ratings"] = [
            rating_view(rt, r._mapping)
            for r in uow.session.execute(
                select(ratings).where(ratings.c.pickup_id == pickup_id).order_by(ratings.c.rater_role)
            )
        ]
    return view


def _visible(rt: ServiceRuntime, uow: UnitOfWork, principal: Principal, pickup_id: str) -> dict:
    row = load(uow.session, pickup_id)
    if not (is_resident(row, principal) or is_collector(row, principal) or is_admin(principal)):
        raise Forbidden("this pickup is not yours")
    return pickup_view(rt, row, lines_of(uow.session, pickup_id), principal)


# --- replies rebuilt: a keyed request whose reply was lost after its commit (services/kernel/idempotency.py) ---


def as_it_stands(rt: ServiceRuntime, principal: Principal, pickup_id: str) -> dict:
    """An action's reply (cancel, settle, weigh ...): the pickup as it stands, as the caller sees it."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        return _visible(rt, uow, principal, pickup_id)


def accepted(rt: ServiceRuntime, principal: Principal, pickup_id: str, outcome: str) -> dict:
    """`accept`'s reply for the outcome it committed (won, again, expired), as the pickup stands: the collector
    who took it sees it, anyone else the 409 the accept gave."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = load(uow.session, pickup_id)
        lines = lines_of(uow.session, pickup_id)
    return accept_reply(
        rt, principal, AcceptOutcome("expired" if outcome == "expired" else "again", row, lines)
    )


def booked(rt: ServiceRuntime, principal: Principal, pickup_id: str) -> dict:
    """`book`'s reply for the pickup it booked."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = load(uow.session, pickup_id)
        if not is_resident(row, principal):
            raise Forbidden("this pickup is not yours")
        return pickup_view(rt, row, lines_of(uow.session, pickup_id), principal)


def rated(rt: ServiceRuntime, principal: Principal, pickup_id: str, role: str) -> dict:
    """`rate`'s reply for the rating it recorded (by the caller's side)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        r = uow.session.execute(
            select(ratings).where(
                ratings.c.pickup_id == pickup_id,
                ratings.c.rater_role == role,
                ratings.c.rater_user_id == principal.user_id,
            )
        ).first()
    if r is None:
        raise NotFound(f"no rating of yours for pickup {pickup_id}")
    return rating_view(rt, r._mapping)


def complained(rt: ServiceRuntime, principal: Principal, pickup_id: str, complaint_id: str) -> dict:
    """`complain`'s reply for the complaint it filed."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        c = uow.session.execute(
            select(complaints).where(
                complaints.c.id == complaint_id,
                complaints.c.pickup_id == pickup_id,
                complaints.c.by_user_id == principal.user_id,
            )
        ).first()
    if c is None:
        raise NotFound(f"no complaint of yours with id {complaint_id}")
    return complaint_view(rt, c._mapping)


def list_pickups(rt: ServiceRuntime, principal: Principal, q: PickupsQuery) -> dict:
    """Newest first: the pickups the caller booked or accepted (an admin sees every pickup unless `mine=1`)."""
    if q.status is not None and q.status not in m.STATUSES:
        raise ValidationFailed.field("status", f"one of {', '.join(m.STATUSES)}")
    cond = []
    if not is_admin(principal) or q.mine:
        cond.append(
            or_(pickups.c.resident_id == principal.user_id, pickups.c.collector_user_id == principal.user_id)
        )
    if q.status:
        cond.append(pickups.c.status == q.status)
    if q.cursor:
        cond.append(pickups.c.id < q.cursor)
    with UnitOfWork(rt.db, readonly=True) as uow:
        rows = uow.session.execute(
            select(pickups).where(and_(*cond)).order_by(pickups.c.id.desc()).limit(q.limit + 1)
        ).all()
        page = rows[: q.limit]
        ids = [r.id for r in page]
        by_pickup: dict[str, list] = {}
        if ids:
            for ln in uow.session.execute(
                select(pickup_lines)
                .where(pickup_lines.c.pickup_id.in_(ids))
                .order_by(pickup_lines.c.category)
            ):
                by_pickup.setdefault(ln.pickup_id, []).append(ln)
        items = [pickup_view(rt, r, by_pickup.get(r.id, []), principal) for r in page]
    return {"items": items, "next_cursor": page[-1].id if len(rows) > q.limit else None}


def list_complaints(rt: ServiceRuntime, principal: Principal, pickup_id: str) -> dict:
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = load(uow.session, pickup_id)
        if not (is_resident(row, principal) or is_collector(row, principal) or is_admin(principal)):
            raise Forbidden("not a party of this pickup")
        rows = uow.session.execute(
            select(complaints).where(complaints.c.pickup_id == pickup_id).order_by(complaints.c.id)
        ).all()
    return {"items": [complaint_view(rt, r._mapping) for r in rows], "next_cursor": None}
