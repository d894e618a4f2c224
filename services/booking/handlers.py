"""Booking's commands: one function per command, one unit of work over one pickup, events to the outbox.

Every state change is a conditional UPDATE (`WHERE id = ? AND status = ? AND version = ?`): of two requests
racing on the same pickup exactly one changes it, and the other re-reads and answers from the state it finds
(409 with the current state, or the idempotent reply when it is the same collector accepting again). Handlers are
synchronous (the API runs them in a thread); `now` is a parameter so the rules about time can be tested.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, bindparam, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.contracts.booking import PickupSettled, SettledLine
from services.kernel import idempotency, pii
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork
from services.kernel.errors import Conflict, Forbidden, NotFound, RuleViolated, ValidationFailed
from services.kernel.events import Envelope
from services.kernel.ids import new_id
from services.kernel.live_feed import FeedingUnitOfWork
from services.kernel.money import line_amount_fen, qty_str
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import leaf

from . import feed, geo
from .domain import model as m
from .domain.commands import (
    BookPickup,
    CancelPickup,
    DisputePickup,
    FileComplaint,
    RatePickup,
    ReschedulePickup,
    WeighPickup,
)
from .domain.events import (
    EstimatedItem,
    PickupAccepted,
    PickupArrived,
    PickupCancelled,
    PickupComplaintFiled,
    PickupDisputed,
    PickupExpired,
    PickupNoShow,
    PickupRated,
    PickupRequested,
    PickupRescheduled,
    PickupWeighed,
    WeighedLine,
)
from .places import district_of, seat_of, validate_city_code
from .prices import prices_in_force
from .saga import request_payout, start_payout
from .settings import BookingSettings, price_cache, settings_of
from .store import collectors, complaints, pickup_lines, pickups, ratings, slot_usage
from .views import complaint_view, pickup_view, rating_view

FEED_PRECISION = 7  # the location events carry: a ~150 m cell, never the address


class Tx(FeedingUnitOfWork):
    """A unit of work that also hands its events to the in-process job feed once they are committed."""

    feed_port = feed.JOB_FEED


def committed(rt: ServiceRuntime, write: Any, lock_key: str = "") -> Any:
    """Run `write(uow)` through the database's group-commit writer; once committed, its events reach the feed."""
    result, events = rt.db.writer.submit(write, lock_key).result()
    if events:
        feed.publish_local(rt, events)
    return result


# --- loading and guarding -----------------------------------------------------------------------------
# Statements on the hot paths are built once: building a statement per call costs more than SQLite running it.
_LOAD = select(pickups).where(pickups.c.id == bindparam("id"))
_LINES = (
    select(pickup_lines).where(pickup_lines.c.pickup_id == bindparam("id")).order_by(pickup_lines.c.category)
)
_COLLECTOR = select(collectors).where(collectors.c.user_id == bindparam("user_id"))
# An accept reads only what a still-requested pickup can have (the other columns are empty until it moves on):
# fewer columns, less to decode per row.
_ACCEPT_PICKUP = [
    pickups.c[n]
    for n in (
        "id",
        "resident_id",
        "status",
        "version",
        "city_code",
        "district",
        "address_enc",
        "lat",
        "lng",
        "geohash",
        "area",
        "window_start",
        "window_end",
        "notes",
        "categories",
        "quote_total_fen",
        "created_at",
        "updated_at",
        "escalated_at",
        "weigh_count",
        "payout_attempts",
    )
]
_ACCEPT_LINE = [
    pickup_lines.c[n]
    for n in (
        "category",
        "unit",
        "tax_code",
        "est_qty",
        "est_unit_price_fen",
        "est_amount_fen",
        "est_price_region",
    )
]
_ACCEPT_COLLECTOR = [
    collectors.c[n] for n in ("collector_id", "user_id", "firm_id", "lat", "lng", "radius_km", "categories")
]
_LOAD_FOR_ACCEPT = (
    select(
        *_ACCEPT_PICKUP,
        *[c.label("line_" + c.name) for c in _ACCEPT_LINE],
        *[c.label("collector_" + c.name) for c in _ACCEPT_COLLECTOR],
    )
    .select_from(
        pickups.outerjoin(pickup_lines, pickup_lines.c.pickup_id == pickups.c.id).outerjoin(
            collectors, collectors.c.user_id == bindparam("user_id")
        )
    )
    .where(pickups.c.id == bindparam("id"))
    .order_by(pickup_lines.c.category)
)
_ACCEPT = (
    update(pickups)
    .where(pickups.c.id == bindparam("pid"), pickups.c.status == m.REQUESTED)
    .values(
        status=m.ACCEPTED,
        version=pickups.c.version + 1,
        updated_at=bindparam("now"),
        collector_id=bindparam("collector_id"),
        collector_user_id=bindparam("collector_user_id"),
        firm_id=bindparam("firm_id"),
        accepted_at=bindparam("now"),
    )
)


def load(session: Session, pickup_id: str) -> Any:
    row = session.execute(_LOAD, {"id": pickup_id}).one_or_none()
    if row is None:
        raise NotFound(f"no pickup with id {pickup_id}")
    return row


def load_for_accept(conn: Any, pickup_id: str, principal: Principal) -> tuple[Any, Any, list[Any]]:
    """What an accept decides on, in one statement (one round trip on PostgreSQL): the caller's collector row
    (Forbidden unless a verified collector), the pickup (NotFound) and its lines. The pickup and lines are complete
    only while it is requested; for any other status read them again with `load` and `lines_of`."""
    rows = conn.execute(_LOAD_FOR_ACCEPT, {"id": pickup_id, "user_id": principal.user_id}).all()
    if not rows:
        collector_of(conn, principal)  # a caller who may not take jobs hears that first, as everywhere
        raise NotFound(f"no pickup with id {pickup_id}")
    first = rows[0]
    n, k = len(_ACCEPT_PICKUP), len(_ACCEPT_LINE)
    if first[n + k] is None or "collector" not in principal.roles:
        raise Forbidden("only a verified collector may do this (verification pending or not a collector)")
    col = SimpleNamespace(**{c.name: first[n + k + i] for i, c in enumerate(_ACCEPT_COLLECTOR)})
    row = as_row(pickups, {c.name: first[i] for i, c in enumerate(_ACCEPT_PICKUP)})
    lines = [
        as_row(
            pickup_lines, {"pickup_id": pickup_id} | {c.name: r[n + i] for i, c in enumerate(_ACCEPT_LINE)}
        )
        for r in rows
        if r[n] is not None
    ]  # the outer join's null line: a pickup without lines
    return col, row, lines


def lines_of(session: Session, pickup_id: str) -> list[Any]:
    return list(session.execute(_LINES, {"id": pickup_id}).all())


def collector_of(session: Session, principal: Principal) -> Any:
    row = session.execute(_COLLECTOR, {"user_id": principal.user_id}).one_or_none()
    if row is None or "collector" not in principal.roles:
        raise Forbidden("only a verified collector may do this (verification pending or not a collector)")
    return row


def is_resident(row: Any, p: Principal) -> bool:
    return row.resident_id == p.user_id


def is_collector(row: Any, p: Principal) -> bool:
    return row.collector_user_id is not None and row.collector_user_id == p.user_id


def is_admin(p: Principal) -> bool:
    return "admin" in p.roles


def require_resident(row: Any, p: Principal) -> None:
    if not is_resident(row, p):
        raise Forbidden("only the resident who booked this pickup may do this")


def require_collector(row: Any, p: Principal) -> None:
    if not is_collector(row, p):
        raise Forbidden("only the collector who accepted this pickup may do this")


def transition(session: Session, row: Any, action: str, now: datetime, **values: Any) -> str:
    """Move `row` along `action` with a conditional UPDATE; Conflict (409) with the current state otherwise."""
    to = m.next_state(action, row.status)
    res = session.execute(
        update(pickups)
        .where(pickups.c.id == row.id, pickups.c.status == row.status, pickups.c.version == row.version)
        .values(status=to, version=pickups.c.version + 1, updated_at=now, **values)
    )
    if res.rowcount != 1:
        current = load(session, row.id).status
        raise Conflict(f"the pickup changed meanwhile; it is now {current}", current_state=current)
    return to


def release_places(session: Session, row: Any, s: BookingSettings) -> None:
    """Give back the places a requested/accepted pickup held in the slots of its window."""
    for slot in slot_starts(row.window_start, row.window_end, s):
        session.execute(
            update(slot_usage)
            .where(slot_usage.c.area == row.area, slot_usage.c.slot_start == slot, slot_usage.c.booked > 0)
            .values(booked=slot_usage.c.booked - 1)
        )


def slot_starts(start: datetime, end: datetime, s: BookingSettings) -> list[datetime]:
    n = int((end - start).total_seconds() // 60) // s.slot_minutes
    return [start + timedelta(minutes=s.slot_minutes * i) for i in range(n)]


def take_places(conn: Connection, area: str, slots: list[datetime], capacity: int) -> None:
    """One place in each slot of the window, or RuleViolated (422 slot_full).

    One statement per slot: insert the slot's counter at 1, or add 1 to it only while it is below capacity
    (`ON CONFLICT DO UPDATE ... WHERE booked < capacity`; no row changed = full). The upsert locks the
    counter row, so concurrent bookings never overbook; slots are taken in time order, so two bookings of
    overlapping windows never deadlock."""
    for slot in sorted(slots):
        taken = (
            capacity > 0
            and conn.execute(_SLOT_UPSERT, {"area": area, "slot": slot, "cap": capacity}).rowcount
        )
        if taken != 1:
            raise RuleViolated(
                "this time slot is fully booked in your area; choose another window",
                reason="slot_full",
                field="window",
                slot_start=slot.isoformat(),
            )


# Insert the slot's counter at 1, or add 1 while below capacity (the same SQL on SQLite ≥ 3.35 and PostgreSQL).
_SLOT_UPSERT = text(
    "INSERT INTO slot_usage (area, slot_start, booked) VALUES (:area, :slot, 1) "
    "ON CONFLICT (area, slot_start) DO UPDATE SET booked = slot_usage.booked + 1 "
    "WHERE slot_usage.booked < :cap"
).bindparams(bindparam("slot", type_=slot_usage.c.slot_start.type))


# --- book ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedBooking:
    """A booking checked, quoted and ready to write: what the write transaction and the reply need."""

    row: SimpleNamespace
    lines: list[dict]
    slots: list[datetime]
    event: Envelope
    address_text: str


def book(rt: ServiceRuntime, principal: Principal, cmd: BookPickup, now: datetime | None = None) -> dict:
    """A resident books a doorstep pickup: checks the address, the window and the items, takes capacity, quotes."""
    city_code = booking_city(cmd)
    prepared = prepare_booking(
        rt, principal, cmd, now or datetime.now(UTC), price_cache(rt).prices(rt.db, city_code)
    )
    committed(rt, booking_write(rt, prepared), booking_lock_key(prepared))
    return booking_view(rt, prepared, principal)


async def book_async(rt: ServiceRuntime, principal: Principal, cmd: BookPickup) -> dict:
    """`book` for the HTTP route. The checks and the quote are pure computation and run on the event loop; only
    a price-copy read on a cache miss goes to a thread, and the write goes to the group-commit writer: a booking
    costs the event loop no thread hand-off."""
    city_code = booking_city(cmd)
    found = price_cache(rt).cached(city_code)
    if found is None:
        found = await asyncio.get_running_loop().run_in_executor(
            None, price_cache(rt).prices, rt.db, city_code
        )
    prepared = prepare_booking(rt, principal, cmd, datetime.now(UTC), found)
    _, events = await asyncio.wrap_future(
        rt.db.writer.submit(booking_write(rt, prepared), booking_lock_key(prepared))
    )
    if events:
        feed.publish_local(rt, events)
    return booking_view(rt, prepared, principal)


def booking_city(cmd: BookPickup) -> str:
    return validate_city_code(cmd.address.city_code, "address.city_code")


def window_slots(s: BookingSettings, window: Any, now: datetime) -> list[datetime]:
    """The slot starts of a requested window under the configured service hours, slot length and lead times (or
    RuleViolated naming the rule it breaks)."""
    return m.check_window(
        window.start,
        window.end,
        now,
        tz=s.tz,
        opens=s.service_opens,
        closes=s.service_closes,
        slot_minutes=s.slot_minutes,
        max_slots=s.max_window_slots,
        min_lead_minutes=s.min_lead_minutes,
        max_days_ahead=s.max_days_ahead,
    )


def prepare_booking(
    rt: ServiceRuntime, principal: Principal, cmd: BookPickup, now: datetime, found_prices: dict[str, Any]
) -> PreparedBooking:
    """Every check and computation of a booking that needs no database: the service area, the window, the items,
    the quote from the price copy (`found_prices`, PriceCache.prices of the city), the row and the event."""
    s = settings_of(rt)
    a = cmd.address
    city_code = booking_city(cmd)
    if not s.in_service_area(a.lat, a.lng):
        raise RuleViolated(
            "the address is outside the service area", reason="outside_service_area", field="address"
        )
    check_near_region(city_code, a.lat, a.lng, s)
    slots = window_slots(s, cmd.window, now)
    cats = {}
    for i, it in enumerate(cmd.items):
        cat = cats[it.category] = leaf(it.category, f"items.{i}.category")
        check_qty(cat, it.est_qty, f"items.{i}.est_qty", s)
        if it.est_qty < cat.min_qty:
            raise RuleViolated(
                f"{cat.name} is collected from {qty_str(cat.min_qty)} {cat.unit}",
                reason="below_minimum",
                field=f"items.{i}.est_qty",
                min_qty=qty_str(cat.min_qty),
            )
    pid = new_id("pk")
    geohash = geo.encode(a.lat, a.lng)
    district = district_of(city_code)
    start, end = cmd.window.start.astimezone(UTC), cmd.window.end.astimezone(UTC)
    prices = prices_in_force(found_prices, list(cats))
    lines = []
    for it in cmd.items:
        q = prices[it.category]
        lines.append(
            dict(
                pickup_id=pid,
                category=it.category,
                unit=cats[it.category].unit,
                tax_code=cats[it.category].tax_code,
                est_qty=qty_str(it.est_qty),
                est_unit_price_fen=q.unit_price_fen,
                est_amount_fen=line_amount_fen(q.unit_price_fen, it.est_qty),
                est_price_region=q.source_region,
            )
        )
    total = sum(ln["est_amount_fen"] for ln in lines)
    if total < s.min_order_fen:
        raise RuleViolated(
            f"the minimum order is {s.min_order_fen} fen; this one is worth {total}",
            reason="below_minimum_order",
            field="items",
        )
    row = as_row(
        pickups,
        dict(
            id=pid,
            resident_id=principal.user_id,
            status=m.REQUESTED,
            version=1,
            city_code=city_code,
            district=district,
            address_enc=pii.encrypt(rt.settings, a.text),
            lat=a.lat,
            lng=a.lng,
            geohash=geohash,
            area=geohash[: s.area_precision],  # a cell's geohash is a prefix of its points' geohashes
            window_start=start,
            window_end=end,
            notes=cmd.notes,
            categories=" ".join(sorted(cats)),
            quote_total_fen=total,
            created_at=now,
            updated_at=now,
            weigh_count=0,
            payout_attempts=0,
        ),
    )
    event = Envelope.wrap(
        PickupRequested(
            pickup_id=pid,
            resident_id=principal.user_id,
            city_code=city_code,
            district=district,
            geohash=geohash[:FEED_PRECISION],
            items=[EstimatedItem(category=it.category, est_qty=qty_str(it.est_qty)) for it in cmd.items],
            window_start=start,
            window_end=end,
            quote_total_fen=total,
            requested_at=now,
        )
    )
    return PreparedBooking(row, lines, slots, event, a.text)


def booking_write(rt: ServiceRuntime, b: PreparedBooking) -> Any:
    """The write transaction of a booking (a group-commit job): a place in each slot, the rows, the event."""
    capacity = settings_of(rt).slot_capacity
    row = vars(b.row)

    def write(uow: Any) -> None:
        idempotency.made(b.row.id)
        take_places(uow.conn, b.row.area, b.slots, capacity)
        uow.insert(pickups, row)  # with the batch's other bookings, in one statement per table
        uow.insert(pickup_lines, b.lines)
        uow.emit(b.event)

    return write


def booking_lock_key(b: PreparedBooking) -> str:
    """The first row a booking locks: its first slot's counter (take_places goes in time order)."""
    return f"slot:{b.row.area}:{min(b.slots).isoformat() if b.slots else ''}"


def booking_view(rt: ServiceRuntime, b: PreparedBooking, principal: Principal) -> dict:
    lines = sorted((as_row(pickup_lines, ln) for ln in b.lines), key=lambda ln: ln.category)
    return pickup_view(rt, b.row, lines, principal, address_text=b.address_text)


def as_row(table: Any, values: dict) -> SimpleNamespace:
    """A row as it will read back (every column; None where not given), to answer without reading it again."""
    blank = _NONE.get(table.name)
    if blank is None:
        blank = _NONE[table.name] = dict.fromkeys(table.c.keys())
    return SimpleNamespace(**(blank | values))


_NONE: dict[str, dict] = {}


def check_qty(cat: Any, qty: Any, field: str, s: BookingSettings) -> None:
    if not m.qty_allowed(cat.unit, qty):
        raise ValidationFailed.field(field, f"{cat.name} is counted in whole pieces (件)")
    if qty > s.max_qty_per_line:
        raise RuleViolated(
            f"at most {s.max_qty_per_line} {cat.unit} per line; call us for bulk collection",
            reason="above_maximum",
            field=field,
        )


def check_near_region(city_code: str, lat: float, lng: float, s: BookingSettings) -> None:
    if not s.max_km_from_region_seat:
        return
    seat = seat_of(city_code)
    if seat is None:
        return
    limit = s.max_km_from_region_seat * (2 if seat.level == "city" else 1)
    if geo.haversine_km(lat, lng, seat.lat, seat.lng) > limit:
        raise RuleViolated(
            f"the coordinates are more than {limit:.0f} km from {seat.name}; check city_code",
            reason="address_mismatch",
            field="address",
        )


# --- dispatch: grab an order (抢单) ------------------------------------------------------------------------


def accept(rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime | None = None) -> dict:
    """Exactly one collector wins: `UPDATE ... WHERE status = 'requested'` changes one row for one of them.

    The winner accepting again gets the same answer (idempotent); everyone else gets 409 with the state. The
    reads, the checks and the conditional UPDATE are one group-commit job: one transaction, no thread hand-off
    between reading and writing."""
    return accept_reply(
        rt,
        principal,
        committed(
            rt, accept_write(rt, principal, pickup_id, now or datetime.now(UTC)), "pickup:" + pickup_id
        ),
    )


async def accept_async(rt: ServiceRuntime, principal: Principal, pickup_id: str) -> dict:
    """`accept` for the HTTP route: the event loop hands the job straight to the group-commit writer."""
    outcome, events = await asyncio.wrap_future(
        rt.db.writer.submit(accept_write(rt, principal, pickup_id, datetime.now(UTC)), "pickup:" + pickup_id)
    )
    if events:
        feed.publish_local(rt, events)
    return accept_reply(rt, principal, outcome)


@dataclass(frozen=True)
class AcceptOutcome:
    kind: str  # won | again (the pickup had moved on: idempotent reply or 409) | expired
    row: Any
    lines: list[Any]


def accept_write(rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime) -> Any:
    """The group-commit job of an accept. Answers the expected outcomes (won, lost the race, expired) with an
    AcceptOutcome, so a lost race never rolls back the other jobs of its batch; raises only for a caller who may
    not take jobs or this job (403/404/422)."""
    s = settings_of(rt)

    def write(uow: Any) -> AcceptOutcome:
        conn = uow.conn
        col, row, lines = load_for_accept(conn, pickup_id, principal)
        if row.status != m.REQUESTED:
            return AcceptOutcome(idempotency.made("again"), load(conn, pickup_id), lines_of(conn, pickup_id))
        if now >= row.window_start:
            # Nobody accepted before the window opened (the timer may not have run yet): it expires here.
            expire_row(uow, row, now, s)
            return AcceptOutcome(idempotency.made("expired"), load(conn, pickup_id), lines)
        check_can_take(col, row)
        taken = dict(collector_id=col.collector_id, collector_user_id=col.user_id, firm_id=col.firm_id)
        if conn.execute(_ACCEPT, dict(pid=row.id, now=now, **taken)).rowcount != 1:
            # another writer thread's transaction took it after our read (PostgreSQL, READ COMMITTED)
            return AcceptOutcome(idempotency.made("again"), load(conn, pickup_id), lines)
        idempotency.made("won")  # the outcome, for the reply rebuilt if it is lost (queries.accepted)
        uow.emit(
            PickupAccepted(pickup_id=row.id, geohash=row.geohash[:FEED_PRECISION], accepted_at=now, **taken)
        )
        accepted = SimpleNamespace(
            **(
                vars(row)
                | taken
                | dict(status=m.ACCEPTED, version=row.version + 1, updated_at=now, accepted_at=now)
            )
        )
        return AcceptOutcome("won", accepted, lines)

    return write


def accept_reply(rt: ServiceRuntime, principal: Principal, outcome: AcceptOutcome) -> dict:
    if outcome.kind == "expired":
        raise Conflict("nobody accepted this job before its window opened", current_state=outcome.row.status)
    if outcome.kind == "again":
        return _accepted_again(rt, outcome.row, outcome.lines, principal)
    return pickup_view(rt, outcome.row, outcome.lines, principal)


def _accepted_again(rt: ServiceRuntime, row: Any, lines: list[Any], principal: Principal) -> dict:
    if is_collector(row, principal) and row.status not in (m.CANCELLED, m.EXPIRED):
        return pickup_view(rt, row, lines, principal)
    if row.status == m.REQUESTED:  # cannot happen under the conditional update; never report a false 409
        raise AssertionError("lost an accept race to nobody")
    taken = row.collector_user_id is not None and row.status not in (m.CANCELLED, m.EXPIRED)
    raise Conflict(
        "another collector has taken this job" if taken else f"this job is {row.status}",
        current_state=row.status,
    )


def check_can_take(col: Any, row: Any) -> None:
    skills = set(col.categories.split())
    missing = sorted(set(row.categories.split()) - skills)
    if missing:
        raise RuleViolated(
            f"your verified categories do not include {', '.join(missing)}",
            reason="category_mismatch",
            missing=missing,
        )
    if geo.haversine_km(col.lat, col.lng, row.lat, row.lng) > col.radius_km:
        raise RuleViolated("this address is outside your verified service area", reason="outside_area")


# --- on site ------------------------------------------------------------------------------------------------


def arrive(rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime | None = None) -> dict:
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        require_collector(row, principal)
        transition(uow.session, row, "arrive", now, arrived_at=now)
        uow.emit(PickupArrived(pickup_id=row.id, collector_id=row.collector_id, arrived_at=now))
        return _view(rt, uow.session, pickup_id, principal)


def weigh(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, cmd: WeighPickup, now: datetime | None = None
) -> dict:
    """The accepting collector records what the scale says; priced at the prices in force now (the estimate stays)."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    cats = {}
    for i, ln in enumerate(cmd.lines):
        cat = cats[ln.category] = leaf(ln.category, f"lines.{i}.category")
        check_qty(cat, ln.qty, f"lines.{i}.qty", s)
    with Tx(rt) as uow:
        ss = uow.session
        row = load(ss, pickup_id)
        require_collector(row, principal)
        m.next_state("weigh", row.status)  # 409 before any work
        existing = {ln.category: ln for ln in lines_of(ss, pickup_id)}
        codes = sorted(set(existing) | set(cats))
        prices = prices_in_force(price_cache(rt).prices(rt.db, row.city_code), codes)
        weighed = {ln.category: ln.qty for ln in cmd.lines}
        out_lines = []
        for code in codes:
            qty = weighed.get(code)
            q = prices[code]
            amount = line_amount_fen(q.unit_price_fen, qty) if qty is not None else 0
            values = dict(
                qty=qty_str(qty) if qty is not None else "0.000",
                unit_price_fen=q.unit_price_fen,
                amount_fen=amount,
                price_region=q.source_region,
                price_as_of=q.as_of,
            )
            if code in existing:
                ss.execute(
                    update(pickup_lines)
                    .where(pickup_lines.c.pickup_id == pickup_id, pickup_lines.c.category == code)
                    .values(**values)
                )
            else:
                cat = cats[code]
                ss.execute(
                    pickup_lines.insert().values(
                        pickup_id=pickup_id, category=code, unit=cat.unit, tax_code=cat.tax_code, **values
                    )
                )
            if qty is not None:
                out_lines.append(
                    WeighedLine(
                        category=code,
                        unit=leaf(code).unit,
                        qty=values["qty"],
                        unit_price_fen=q.unit_price_fen,
                        amount_fen=amount,
                    )
                )
        total = sum(ln.amount_fen for ln in out_lines)
        estimate = {c: Decimal(ln.est_qty) for c, ln in existing.items() if ln.est_qty is not None}
        if not cmd.reason and m.needs_reason(estimate, weighed, s.weigh_reason_threshold_pct):
            raise RuleViolated(
                f"the weighed quantities differ from the estimate by more than "
                f"{s.weigh_reason_threshold_pct}%: say why (reason)",
                reason="reason_required",
                field="reason",
                quote_total_fen=row.quote_total_fen,
                total_fen=total,
            )
        transition(
            ss,
            row,
            "weigh",
            now,
            weighed_total_fen=total,
            weigh_reason=cmd.reason,
            scale_reading=cmd.scale_reading,
            weighed_at=now,
            weigh_count=row.weigh_count + 1,
        )
        uow.emit(
            PickupWeighed(
                pickup_id=row.id,
                collector_id=row.collector_id,
                lines=out_lines,
                total_fen=total,
                quote_total_fen=row.quote_total_fen,
                reason=cmd.reason,
                scale_reading=cmd.scale_reading,
                weighed_at=now,
            )
        )
        return _view(rt, ss, pickup_id, principal)


def settle(rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime | None = None) -> dict:
    """The resident confirms the weighed amounts: publish PickupSettled and start the payout saga.

    With invoicing on, the payout waits for invoicing's answer (or the time-out); with it off, the gross amount
    is requested at once."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        ss = uow.session
        row = load(ss, pickup_id)
        require_resident(row, principal)
        m.next_state("settle", row.status)
        lines = [ln for ln in lines_of(ss, pickup_id) if ln.qty is not None and ln.qty != "0.000"]
        gross = row.weighed_total_fen or 0
        payout_id = m.payout_id_for(row.id)
        transition(
            ss,
            row,
            "settle",
            now,
            settled_at=now,
            invoice_status=m.INVOICE_AWAITING if s.invoicing_on else m.INVOICE_SKIPPED,
            payout_id=payout_id,
            payout_status=m.PAYOUT_PENDING,
            payout_amount_fen=gross,
        )
        uow.emit(
            PickupSettled(
                pickup_id=row.id,
                resident_id=row.resident_id,
                collector_id=row.collector_id,
                collector_user_id=row.collector_user_id,
                firm_id=row.firm_id,
                city_code=row.city_code,
                lines=[
                    SettledLine(
                        category=ln.category,
                        tax_code=ln.tax_code,
                        unit=ln.unit,
                        qty=ln.qty,
                        unit_price_fen=ln.unit_price_fen,
                        amount_fen=ln.amount_fen,
                    )
                    for ln in lines
                ],
                total_fen=gross,
                weighed_at=row.weighed_at,
                settled_at=now,
                payout_id=payout_id,
                quote_total_fen=row.quote_total_fen,
            )
        )
        if not s.invoicing_on:
            start_payout(
                uow,
                row.id,
                withheld_fen=0,
                invoice_status=m.INVOICE_SKIPPED,
                invoice_id=None,
                now=now,
                expect=m.INVOICE_SKIPPED,
            )
        return _view(rt, ss, pickup_id, principal)


def dispute(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, cmd: DisputePickup, now: datetime | None = None
) -> dict:
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        require_resident(row, principal)
        transition(uow.session, row, "dispute", now, dispute_reason=cmd.reason, disputed_at=now)
        uow.emit(
            PickupDisputed(
                pickup_id=row.id,
                resident_id=row.resident_id,
                collector_id=row.collector_id,
                reason=cmd.reason,
                disputed_at=now,
            )
        )
        return _view(rt, uow.session, pickup_id, principal)


def reschedule(
    rt: ServiceRuntime,
    principal: Principal,
    pickup_id: str,
    cmd: ReschedulePickup,
    now: datetime | None = None,
) -> dict:
    """The resident moves the window of a pickup nobody has accepted yet (accepted: cancel and book again, within
    the cancel rules). The new window follows the booking rules and takes places in its slots; the old ones are
    given back in the same transaction."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    start, end = cmd.window.start.astimezone(UTC), cmd.window.end.astimezone(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        require_resident(row, principal)  # first: someone else's pickup is refused whatever they ask
        slots = window_slots(s, cmd.window, now)
        if row.status != m.REQUESTED:
            raise Conflict(
                "only a pickup nobody has accepted can be rescheduled; cancel it and book again",
                current_state=row.status,
            )
        release_places(uow.session, row, s)
        take_places(uow.session.connection(), row.area, slots, s.slot_capacity)
        transition(uow.session, row, "reschedule", now, window_start=start, window_end=end, escalated_at=None)
        uow.emit(
            PickupRescheduled(
                pickup_id=row.id,
                old_window_start=row.window_start,
                window_start=start,
                window_end=end,
                rescheduled_at=now,
            )
        )
        return _view(rt, uow.session, pickup_id, principal)


def cancel(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, cmd: CancelPickup, now: datetime | None = None
) -> dict:
    """The resident cancels a requested pickup at any time, an accepted one until the cut-off before the window;
    an admin cancels any pickup not yet settled."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        if is_resident(row, principal):
            by, action = "resident", "cancel"
            m.next_state(action, row.status)
            cutoff = row.window_start - timedelta(minutes=s.resident_cancel_cutoff_minutes)
            if row.status == m.ACCEPTED and now > cutoff:
                raise RuleViolated(
                    f"a collector is on the way: an accepted pickup can be cancelled until "
                    f"{s.resident_cancel_cutoff_minutes} minutes before the window",
                    reason="cancel_cutoff",
                    cutoff=cutoff.isoformat(),
                )
        elif is_admin(principal):
            by, action = "admin", "admin_cancel"
        else:
            raise Forbidden("only the resident who booked this pickup (or an admin) may cancel it")
        transition(uow.session, row, action, now, closed_at=now, closed_by=by, close_reason=cmd.reason)
        if row.status in m.HOLDS_CAPACITY:
            release_places(uow.session, row, s)
        uow.emit(
            PickupCancelled(
                pickup_id=row.id,
                by=by,
                previous_status=row.status,
                reason=cmd.reason,
                geohash=row.geohash[:FEED_PRECISION],
                cancelled_at=now,
            )
        )
        return _view(rt, uow.session, pickup_id, principal)


def report_no_show(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime | None = None
) -> dict:
    """The collector is at the door and nobody answers: after the wait, the pickup ends as no_show (resident)."""
    s = settings_of(rt)
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        require_collector(row, principal)
        if row.status != m.ARRIVED:
            raise Conflict("report a no-show after arriving", current_state=row.status)
        since = max(row.arrived_at, row.window_start) + timedelta(minutes=s.no_show_wait_minutes)
        if now < since:
            raise RuleViolated(
                f"wait {s.no_show_wait_minutes} minutes after arriving (and after the window "
                f"opens) before reporting a no-show",
                reason="too_early",
                not_before=since.isoformat(),
            )
        transition(
            uow.session, row, "no_show", now, closed_at=now, closed_by="collector", no_show_party="resident"
        )
        uow.emit(
            PickupNoShow(pickup_id=row.id, party="resident", collector_id=row.collector_id, recorded_at=now)
        )
        return _view(rt, uow.session, pickup_id, principal)


def expire_row(uow: UnitOfWork, row: Any, now: datetime, s: BookingSettings) -> bool:
    """requested → expired (nobody accepted before the window opened); False if it had moved on meanwhile."""
    res = uow.session.execute(
        update(pickups)
        .where(pickups.c.id == row.id, pickups.c.status == m.REQUESTED)
        .values(
            status=m.EXPIRED, version=pickups.c.version + 1, updated_at=now, closed_at=now, closed_by="system"
        )
    )
    if res.rowcount != 1:
        return False
    release_places(uow.session, row, s)
    uow.emit(
        PickupExpired(
            pickup_id=row.id,
            resident_id=row.resident_id,
            geohash=row.geohash[:FEED_PRECISION],
            window_start=row.window_start,
            expired_at=now,
        )
    )
    return True


# --- after settlement ------------------------------------------------------------------------------------


def retry_payout(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, now: datetime | None = None
) -> dict:
    """A failed payout is requested again under a new id (`po_<pickup>_<n>`); only after a failure."""
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        if not (is_resident(row, principal) or is_admin(principal)):
            raise Forbidden("only the resident of this pickup (or an admin) may retry its payout")
        if row.payout_status != m.PAYOUT_FAILED:
            raise Conflict(
                f"only a failed payout can be retried; this one is {row.payout_status or 'not started'}",
                current_state=row.status,
                payout_status=row.payout_status,
            )
        attempt = row.payout_attempts + 1
        res = uow.session.execute(
            update(pickups)
            .where(
                pickups.c.id == row.id,
                pickups.c.payout_status == m.PAYOUT_FAILED,
                pickups.c.payout_attempts == row.payout_attempts,
            )
            .values(version=pickups.c.version + 1, updated_at=now)
        )
        if res.rowcount != 1:
            current = load(uow.session, pickup_id)
            raise Conflict(
                "the payout changed meanwhile",
                current_state=current.status,
                payout_status=current.payout_status,
            )
        request_payout(uow, row, row.payout_amount_fen, attempt, now)
        return _view(rt, uow.session, pickup_id, principal)


def rate(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, cmd: RatePickup, now: datetime | None = None
) -> dict:
    """Two-way ratings after settlement: the resident rates the collector and the collector the resident, once."""
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        if is_resident(row, principal):
            role, ratee = "resident", row.collector_user_id
        elif is_collector(row, principal):
            role, ratee = "collector", row.resident_id
        else:
            raise Forbidden("only the resident and the collector of this pickup may rate it")
        if row.status != m.SETTLED:
            raise Conflict("ratings open once the pickup is settled", current_state=row.status)
        exists = uow.session.execute(
            select(ratings.c.score).where(ratings.c.pickup_id == pickup_id, ratings.c.rater_role == role)
        ).first()
        if exists:
            raise Conflict(f"the {role} has already rated this pickup", current_state=row.status)
        rating = dict(
            pickup_id=pickup_id,
            rater_role=role,
            rater_user_id=principal.user_id,
            ratee_user_id=ratee,
            score=cmd.score,
            comment=cmd.comment,
            created_at=now,
        )
        idempotency.made(role)
        try:
            uow.session.execute(ratings.insert().values(**rating))
        except IntegrityError:  # the same side rating twice at the same moment
            raise Conflict(f"the {role} has already rated this pickup", current_state=row.status) from None
        uow.emit(
            PickupRated(
                pickup_id=pickup_id,
                rater_role=role,
                rater_user_id=principal.user_id,
                ratee_user_id=ratee,
                score=cmd.score,
                rated_at=now,
            )
        )
    return rating_view(rt, rating)


def complain(
    rt: ServiceRuntime, principal: Principal, pickup_id: str, cmd: FileComplaint, now: datetime | None = None
) -> dict:
    """A party of the pickup files a complaint with evidence (photos, the scale ticket, ...)."""
    now = now or datetime.now(UTC)
    with Tx(rt) as uow:
        row = load(uow.session, pickup_id)
        if is_resident(row, principal):
            role = "resident"
        elif is_collector(row, principal):
            role = "collector"
        else:
            raise Forbidden("only the resident and the collector of this pickup may complain about it")
        if row.collector_id is None:
            raise Conflict(
                "no collector has taken this pickup: there is nobody to complain about",
                current_state=row.status,
            )
        cid = new_id("cp")
        idempotency.made(cid)
        evidence = [e.model_dump(exclude_none=True) for e in cmd.evidence]
        complaint = dict(
            id=cid,
            pickup_id=pickup_id,
            by_user_id=principal.user_id,
            by_role=role,
            kind=cmd.kind,
            text=cmd.text,
            evidence=json.dumps(evidence, ensure_ascii=False),
            status="open",
            created_at=now,
        )
        uow.session.execute(complaints.insert().values(**complaint))
        uow.emit(
            PickupComplaintFiled(
                pickup_id=pickup_id,
                complaint_id=cid,
                by_role=role,
                kind=cmd.kind,
                evidence_count=len(evidence),
                filed_at=now,
            )
        )
    return complaint_view(rt, complaint | {"evidence": evidence})


# --- reads -------------------------------------------------------------------------------------------------


def _view(rt: ServiceRuntime, ss: Session, pickup_id: str, principal: Principal) -> dict:
    return pickup_view(rt, load(ss, pickup_id), lines_of(ss, pickup_id), principal)
