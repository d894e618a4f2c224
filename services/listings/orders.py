"""Orders with escrow (担保交易), and what listings does with payments' reports about their holds.

    POST /v1/orders ─▶ listing reserved, order pending_payment, HoldRequested ─▶ payments opens the payment
    buyer confirms at payments ─▶ HoldAuthorised ─▶ order paid, `ship_by` set      | HoldDeclined: stays pending
    seller ships ─▶ HoldEscrowRequested ─▶ HoldEscrowed (captured into the platform's escrow: nothing can lapse now)
    buyer confirms receipt (or auto-confirm) ─▶ completed, HoldCaptureRequested (released to the seller less fee)
    cancel (before shipping) / not shipped by `ship_by` / expiry (unpaid) ─▶ HoldCancelRequested (hold released),
        listing freed
    refund after shipping (the seller, or an admin deciding a dispute) ─▶ HoldCancelRequested (escrow refunded,
        or the payment closed when none reached escrow)
    the authorisation let go between the ship and the escrow capture (HoldCancelled / HoldCaptureRefused) ─▶
        the order stays shipped, the buyer pays again: HoldRequested `hr_<order>-<n>` ─▶ authorised ─▶
        HoldEscrowRequested at once. Until its money is in escrow a shipped order cannot complete.

Why capture at shipping: the buyer's card authorisation lapses at the provider (Stripe: 7 days), and a slow
seller plus shipping plus auto-confirm can exceed that. So a paid order must ship within `ship_days` (validated
below the provider's window) or it is cancelled, and shipping captures the money into escrow, where it waits for
the buyer's confirmation without lapsing.

How each step stays safe under races and redelivery:
- the reservation is a conditional UPDATE (`WHERE status = 'published'`) on the locked listing row, and a partial
  unique index allows one live order per listing: of any number of buyers racing, one gets the order;
- the hold request id is derived from the order id (`hr_<order>`), so payments acts on it once, and the requests
  of one order reach payments in the order they were made (one partition);
- every report from payments moves the order only from the state it expects (a late `HoldAuthorised` for an
  order that expired is answered with a cancel request, which payments applies once);
- timers select due rows and change each under a conditional UPDATE (see timers.py);
- an order asks for an escrow capture and a release only when shipped and for a cancel only before (or a refund
  from escrow after), all under its row lock, so payments never has to refuse one of its requests for having
  lost a race. A held authorisation the provider lets go anyway (reported unasked as HoldCancelled
  `authorisation_lapsed`) cancels a paid order before the seller ships;
- one let go between the seller's ship and payments' capture (the provider dropped it before its window) leaves a
  shipped order whose money is nowhere: it is marked (`payment_failure_reason`, listed for admins), it cannot be
  confirmed (409) nor auto-confirmed, and the buyer is asked to pay again under a new request id; the seller or
  an admin may cancel it instead. Reports about a request the order no longer uses change nothing.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from services.contracts.listings import ListingUnpublished, OrderCancelled, OrderCompleted, OrderPaid
from services.contracts.payments import (
    AUTHORISATION_LAPSED,
    HoldAuthorised,
    HoldCancelled,
    HoldCancelRefused,
    HoldCancelRequested,
    HoldCaptured,
    HoldCaptureRefused,
    HoldCaptureRequested,
    HoldDeclined,
    HoldEscrowed,
    HoldEscrowRequested,
    HoldOpened,
    HoldRefunded,
    HoldRequested,
)
from services.kernel import idempotency
from services.kernel.auth import Principal
from services.kernel.db import UnitOfWork, retry_on_conflict
from services.kernel.errors import Conflict, Forbidden, NotFound
from services.kernel.ids import new_id
from services.kernel.runtime import ServiceRuntime

from .domain import model as m
from .domain.rules import not_own_listing
from .handlers import published_event, refuse
from .settings import settings_of
from .store import listings, orders, reviews

REQUESTER = "listings"
# the order's payment waits for the buyer (first payment, or paying again after shipping)
WAITING_FOR_BUYER = ("requested", "requires_payment_method", "declined")
# a shipped order's payment that reached escrow (or left it): a report of a lost hold cannot be about it
SETTLED_AFTER_SHIPPING = frozenset({m.IN_ESCROW, "captured", "refunded"})

log = logging.getLogger(__name__)


# --- commands ------------------------------------------------------------------------------------------------


def create_order(rt: ServiceRuntime, buyer_id: str, listing_id: str) -> dict[str, Any]:
    s = settings_of(rt)

    def work() -> dict[str, Any]:
        with UnitOfWork(rt.db) as uow:
            sess = uow.session
            row = sess.execute(select(listings).where(listings.c.id == listing_id).with_for_update()).first()
            if row is None or row.status in (m.DRAFT, m.WITHDRAWN):
                raise NotFound(f"no listing with id {listing_id}")
            refuse(not_own_listing(buyer_id, row.seller_id))
            now = datetime.now(UTC)
            order_id = idempotency.made(new_id("od"))
            res = sess.execute(
                update(listings)
                .where(listings.c.id == row.id, listings.c.status == m.PUBLISHED)
                .values(
                    status=m.RESERVED, reserved_order_id=order_id, version=row.version + 1, updated_at=now
                )
            )
            if res.rowcount != 1:
                raise Conflict(
                    f"listing {row.id} is {row.status}: it cannot be ordered", current_state=row.status
                )
            hold_request_id = m.hold_request_id_for(order_id)
            sess.execute(
                orders.insert().values(
                    id=order_id,
                    listing_id=row.id,
                    buyer_id=buyer_id,
                    seller_id=row.seller_id,
                    status=m.PENDING_PAYMENT,
                    version=1,
                    amount_fen=int(row.price_fen),
                    category=row.category,
                    city_code=row.city_code,
                    hold_request_id=hold_request_id,
                    payment_status="requested",
                    auto_confirmed=False,
                    created_at=now,
                    updated_at=now,
                    expires_at=now + timedelta(minutes=s.payment_minutes),
                )
            )
            uow.emit(
                ListingUnpublished(listing_id=row.id, version=row.version + 1, reason="reserved", at=now)
            )
            uow.emit(
                HoldRequested(
                    hold_request_id=hold_request_id,
                    payer_user_id=buyer_id,
                    amount_fen=int(row.price_fen),
                    reference_id=order_id,
                    requested_by=REQUESTER,
                    requested_at=now,
                )
            )
            return order_view(_order(uow, order_id))

    try:
        return retry_on_conflict(work)
    except IntegrityError:  # the partial unique index: another order took the listing at the same moment
        raise Conflict(
            f"listing {listing_id} is reserved: it cannot be ordered", current_state=m.RESERVED
        ) from None


def ship_order(
    rt: ServiceRuntime, user: Principal, order_id: str, carrier: str | None, tracking_no: str | None
) -> dict[str, Any]:
    with UnitOfWork(rt.db) as uow:
        row = _order(uow, order_id, lock=True)
        _party(row, user, "seller")
        m.next_order_state("ship", row.status)
        now = datetime.now(UTC)
        if row.ship_by is not None and now >= row.ship_by:
            # too late, and the timer has not come by yet: cancel it as the timer would (committed), then refuse
            close(uow, row, "cancel", reason="not_shipped")
            shipped = None
        else:
            uow.session.execute(
                update(orders)
                .where(orders.c.id == row.id)
                .values(
                    status=m.SHIPPED,
                    carrier=carrier,
                    tracking_no=tracking_no,
                    shipped_at=now,
                    updated_at=now,
                    version=row.version + 1,
                )
            )
            # the goods leave: capture the buyer's money into escrow now, before the authorisation can lapse
            uow.emit(
                HoldEscrowRequested(
                    hold_request_id=row.hold_request_id, requested_by=REQUESTER, requested_at=now
                )
            )
            shipped = order_view(_order(uow, order_id))
    if shipped is None:
        raise _not_shipped(row)
    return shipped


def shipped(rt: ServiceRuntime, user: Principal, order_id: str) -> dict[str, Any]:
    """`ship_order`'s reply rebuilt (lost after its commit): the order as it stands, or the refusal it committed
    (too late: cancelled as not shipped; a shipped order is never cancelled for that)."""
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = _order(uow, order_id)
    _party(row, user, "seller")
    if row.status == m.CANCELLED and row.cancel_reason == "not_shipped":
        raise _not_shipped(row)
    return order_view(row)


def _not_shipped(row: Any) -> Conflict:
    return Conflict(
        f"order {row.id} was not shipped by {row.ship_by.isoformat()}: it is cancelled and the buyer's "
        "money released",
        current_state=m.CANCELLED,
        reason="not_shipped",
    )


def confirm_receipt(
    rt: ServiceRuntime, user: Principal | None, order_id: str, *, auto: bool = False
) -> dict[str, Any]:
    """The buyer has the item: the escrow is captured and released to the seller less the platform fee."""
    with UnitOfWork(rt.db) as uow:
        row = _order(uow, order_id, lock=True)
        if user is not None:
            _party(row, user, "buyer")
        complete(uow, rt, row, auto=auto)
        return order_view(_order(uow, order_id))


def complete(uow: UnitOfWork, rt: ServiceRuntime, row: Any, *, auto: bool) -> bool:
    m.next_order_state("confirm", row.status)
    if row.payment_status != m.IN_ESCROW:
        # completing releases the escrow to the seller: with nothing in it the seller would never be paid
        why = (
            f"{row.payment_failure_reason}: the buyer is asked to pay again"
            if row.payment_failure_reason
            else "its capture is on its way: try again in a moment"
        )
        raise Conflict(
            f"order {row.id} cannot be completed: the buyer's money is not in escrow yet (payment "
            f"{row.payment_status}; {why})",
            current_state=row.status,
            reason="payment_not_in_escrow",
            payment_status=row.payment_status,
            payment_failure_reason=row.payment_failure_reason,
        )
    s = settings_of(rt)
    now = datetime.now(UTC)
    fee = m.platform_fee_fen(int(row.amount_fen), s.platform_fee_bps, s.min_fee_fen)
    res = uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.status == m.SHIPPED, orders.c.payment_status == m.IN_ESCROW)
        .values(
            status=m.COMPLETED,
            fee_fen=fee,
            completed_at=now,
            auto_confirmed=auto,
            updated_at=now,
            version=row.version + 1,
        )
    )
    if res.rowcount != 1:
        return False
    listing = uow.session.execute(
        select(listings).where(listings.c.id == row.listing_id).with_for_update()
    ).one()
    uow.session.execute(
        update(listings)
        .where(listings.c.id == listing.id)
        .values(
            status=m.next_listing_state("sell", listing.status), version=listing.version + 1, updated_at=now
        )
    )
    uow.emit(ListingUnpublished(listing_id=listing.id, version=listing.version + 1, reason="sold", at=now))
    uow.emit(
        HoldCaptureRequested(
            hold_request_id=row.hold_request_id,
            payee_user_id=row.seller_id,
            payee_kind="seller",
            fee_fen=fee,
            requested_by=REQUESTER,
            requested_at=now,
        )
    )
    uow.emit(
        OrderCompleted(
            order_id=row.id,
            listing_id=row.listing_id,
            buyer_id=row.buyer_id,
            seller_id=row.seller_id,
            amount_fen=int(row.amount_fen),
            fee_fen=fee,
            category=row.category,
            city_code=row.city_code,
            completed_at=now,
            auto_confirmed=auto,
        )
    )
    return True


def cancel_order(rt: ServiceRuntime, user: Principal, order_id: str) -> dict[str, Any]:
    """Buyer or seller (or an admin), before shipping: the hold is released in full. After shipping the seller
    (taking the item back) or an admin (deciding a dispute for the buyer): the escrow is refunded in full (or, when
    the buyer's money never reached it, the payment they were asked to make again is closed)."""
    with UnitOfWork(rt.db) as uow:
        row = _order(uow, order_id, lock=True)
        role = _party(row, user, "buyer", "seller", admin_ok=True)
        # the buyer's own cancel of a shipped order stays a conflict: they have the goods
        action = "refund" if row.status == m.SHIPPED and role != "buyer" else "cancel"
        close(uow, row, action, reason=f"cancelled_by_{role}")
        return order_view(_order(uow, order_id))


def close(uow: UnitOfWork, row: Any, action: str, reason: str) -> bool:
    """Cancel, refund or expire an order: free the listing, ask payments to give the money back (release the
    hold, or refund the escrow once shipping captured it)."""
    to = m.next_order_state(action, row.status)
    now = datetime.now(UTC)
    res = uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.status == row.status)
        .values(status=to, cancel_reason=reason, closed_at=now, updated_at=now, version=row.version + 1)
    )
    if res.rowcount != 1:
        return False
    # refunded after shipping: the item is with the buyer or on its way back; the seller publishes it again
    release_listing(uow, row.listing_id, row.id, to_draft=action == "refund")
    uow.emit(
        HoldCancelRequested(
            hold_request_id=row.hold_request_id, reason=reason, requested_by=REQUESTER, requested_at=now
        )
    )
    uow.emit(
        OrderCancelled(
            order_id=row.id,
            listing_id=row.listing_id,
            buyer_id=row.buyer_id,
            seller_id=row.seller_id,
            amount_fen=int(row.amount_fen),
            reason="expired" if action == "expire" else reason,
            cancelled_at=now,
        )
    )
    return True


def release_listing(uow: UnitOfWork, listing_id: str, order_id: str, to_draft: bool = False) -> None:
    """Back on sale, or to draft when its wipe certificate was revoked while the order ran (or `to_draft`)."""
    s = uow.session
    listing = s.execute(select(listings).where(listings.c.id == listing_id).with_for_update()).one()
    if listing.status != m.RESERVED or listing.reserved_order_id != order_id:
        return
    now = datetime.now(UTC)
    if to_draft or listing.unpublished_reason == "certificate_revoked":
        s.execute(
            update(listings)
            .where(listings.c.id == listing_id)
            .values(
                status=m.next_listing_state("release_to_draft", listing.status),
                version=listing.version + 1,
                reserved_order_id=None,
                updated_at=now,
            )
        )
        return
    s.execute(
        update(listings)
        .where(listings.c.id == listing_id)
        .values(
            status=m.next_listing_state("release", listing.status),
            version=listing.version + 1,
            reserved_order_id=None,
            updated_at=now,
        )
    )
    uow.emit(published_event(s.execute(select(listings).where(listings.c.id == listing_id)).one()))


# --- reviews and reputation ---------------------------------------------------------------------------------


def review_order(
    rt: ServiceRuntime, user: Principal, order_id: str, rating: int, comment: str
) -> dict[str, Any]:
    """Once per side, completed orders only."""

    def work() -> dict[str, Any]:
        with UnitOfWork(rt.db) as uow:
            row = _order(uow, order_id)
            role = _party(row, user, "buyer", "seller")
            if row.status != m.COMPLETED:
                raise Conflict(
                    f"only a completed order can be reviewed; this one is {row.status}",
                    current_state=row.status,
                )
            done = uow.session.execute(
                select(reviews.c.order_id).where(
                    reviews.c.order_id == order_id, reviews.c.author_role == role
                )
            ).first()
            if done is not None:
                raise Conflict(f"the {role} has already reviewed this order", current_state="reviewed")
            values = dict(
                order_id=order_id,
                author_role=role,
                author_id=user.user_id,
                subject_id=row.seller_id if role == "buyer" else row.buyer_id,
                rating=rating,
                comment=comment,
                created_at=datetime.now(UTC),
            )
            idempotency.made(role)
            uow.session.execute(reviews.insert().values(**values))
            return values

    try:
        return retry_on_conflict(work)
    except IntegrityError:
        raise Conflict("this order has already been reviewed by you", current_state="reviewed") from None


def reviewed(rt: ServiceRuntime, user: Principal, order_id: str, role: str) -> dict[str, Any]:
    """`review_order`'s reply for the review it recorded (its reply lost after the commit)."""
    with rt.db.session(readonly=True) as s:
        row = s.execute(
            select(reviews).where(
                reviews.c.order_id == order_id,
                reviews.c.author_role == role,
                reviews.c.author_id == user.user_id,
            )
        ).first()
    if row is None:
        raise NotFound(f"no review of yours for order {order_id}")
    keys = ("order_id", "author_role", "author_id", "subject_id", "rating", "comment", "created_at")
    return {k: row._mapping[k] for k in keys}


def reputation(rt: ServiceRuntime, user_id: str) -> dict[str, Any]:
    with rt.db.session(readonly=True) as s:
        ratings = [
            int(r.rating) for r in s.execute(select(reviews.c.rating).where(reviews.c.subject_id == user_id))
        ]
        completed = s.execute(
            select(func.count())
            .select_from(orders)
            .where(
                orders.c.status == m.COMPLETED,
                (orders.c.seller_id == user_id) | (orders.c.buyer_id == user_id),
            )
        ).scalar()
    return {
        "user_id": user_id,
        "score": m.reputation_score(ratings),
        "reviews": len(ratings),
        "completed_orders": int(completed or 0),
    }


# --- queries ------------------------------------------------------------------------------------------------


def get_order(rt: ServiceRuntime, user: Principal, order_id: str) -> dict[str, Any]:
    with UnitOfWork(rt.db, readonly=True) as uow:
        row = _order(uow, order_id)
    _party(row, user, "buyer", "seller", admin_ok=True)
    return order_view(row)


def list_orders(rt: ServiceRuntime, user_id: str, role: str, limit: int, offset: int) -> list[dict[str, Any]]:
    col = orders.c.buyer_id if role == "buyer" else orders.c.seller_id
    with rt.db.session(readonly=True) as s:
        rows = s.execute(
            select(orders)
            .where(col == user_id)
            .order_by(orders.c.created_at.desc(), orders.c.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
    return [order_view(r) for r in rows]


def admin_orders(
    rt: ServiceRuntime, status: str | None, payment_failed: bool, limit: int, offset: int
) -> list[dict[str, Any]]:
    """Every order (admins), newest first; `payment_failed`: the shipped orders whose buyer was asked to pay again
    (their money is not in escrow), the oldest failure first: they wait for the buyer, the seller or an admin."""
    q = select(orders)
    if status:
        q = q.where(orders.c.status == status)
    if payment_failed:
        q = q.where(orders.c.status == m.SHIPPED, orders.c.payment_failure_reason.is_not(None)).order_by(
            orders.c.payment_failed_at, orders.c.id
        )
    else:
        q = q.order_by(orders.c.created_at.desc(), orders.c.id.desc())
    with rt.db.session(readonly=True) as s:
        rows = s.execute(q.limit(limit).offset(offset)).all()
    return [order_view(r) for r in rows]


def payment_status_of(rt: ServiceRuntime, order_id: str) -> str | None:
    with rt.db.session(readonly=True) as s:
        return s.execute(select(orders.c.payment_status).where(orders.c.id == order_id)).scalar()


def order_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "status": row.status,
        "listing_id": row.listing_id,
        "buyer_id": row.buyer_id,
        "seller_id": row.seller_id,
        "amount_fen": int(row.amount_fen),
        "fee_fen": None if row.fee_fen is None else int(row.fee_fen),
        "payment": {
            "id": row.hold_request_id,
            "client_secret": row.client_secret,
            "status": row.payment_status,
            "decline_reason": row.decline_reason,
            "attempt": int(row.payment_attempt),
            "failure_reason": row.payment_failure_reason,
            "failed_at": row.payment_failed_at,
        },
        "carrier": row.carrier,
        "tracking_no": row.tracking_no,
        "cancel_reason": row.cancel_reason,
        "auto_confirmed": bool(row.auto_confirmed),
        "created_at": row.created_at,
        "expires_at": row.expires_at,
        "paid_at": row.paid_at,
        "ship_by": row.ship_by,
        "shipped_at": row.shipped_at,
        "completed_at": row.completed_at,
    }


def _order(uow: UnitOfWork, order_id: str, lock: bool = False) -> Any:
    q = select(orders).where(orders.c.id == order_id)
    row = uow.session.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise NotFound(f"no order with id {order_id}")
    return row


def _party(row: Any, user: Principal, *roles: str, admin_ok: bool = False) -> str:
    """The caller's side of the order (buyer or seller), if it is one of `roles`; else 403 (404 for strangers, who
    may not learn that the order exists)."""
    if "buyer" in roles and user.user_id == row.buyer_id:
        return "buyer"
    if "seller" in roles and user.user_id == row.seller_id:
        return "seller"
    if admin_ok and user.has("admin"):
        return "admin"
    if user.user_id in (row.buyer_id, row.seller_id) or user.has("admin"):
        # an admin sees every order (GET): the order exists for them, this action is not theirs
        raise Forbidden(f"only the {' or '.join(roles)} may do this", reason="wrong_party")
    raise NotFound(f"no order with id {row.id}")


# --- payments' reports (consumer group listings.payments) ---------------------------------------------------


def _by_hold(uow: UnitOfWork, hold_request_id: str) -> Any:
    return uow.session.execute(
        select(orders).where(orders.c.hold_request_id == hold_request_id).with_for_update()
    ).first()


def when_hold_opened_record(event: HoldOpened, uow: UnitOfWork) -> None:
    uow.session.execute(
        update(orders)
        .where(orders.c.hold_request_id == event.hold_request_id, orders.c.payment_status == "requested")
        .values(
            payment_status="requires_payment_method",
            client_secret=event.client_secret,
            updated_at=datetime.now(UTC),
        )
    )


def when_hold_authorised_mark_paid(event: HoldAuthorised, uow: UnitOfWork, *, rt: ServiceRuntime) -> None:
    row = _by_hold(uow, event.hold_request_id)
    if row is None:
        return  # not one of listings' holds
    now = datetime.now(UTC)
    if row.status == m.SHIPPED:
        if row.payment_status in WAITING_FOR_BUYER:
            _paid_again(uow, row, event, now)
        return  # else the same fact again: the escrow is asked for (or holds the money) already
    if row.status != m.PENDING_PAYMENT:
        # paid too late (the order expired or was cancelled meanwhile): give the money back. Only then: the same
        # fact reported again about a paid order must leave its escrow alone.
        if row.status in (m.CANCELLED, m.EXPIRED) and row.payment_status not in ("cancelled", "refunded"):
            uow.session.execute(update(orders).where(orders.c.id == row.id).values(hold_id=event.hold_id))
            uow.emit(
                HoldCancelRequested(
                    hold_request_id=row.hold_request_id,
                    reason=f"order_{row.status}",
                    requested_by=REQUESTER,
                    requested_at=now,
                )
            )
        return
    uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.status == m.PENDING_PAYMENT)
        .values(
            status=m.next_order_state("pay", row.status),
            payment_status="held",
            hold_id=event.hold_id,
            decline_reason=None,
            paid_at=now,
            # counted from the authorisation: that is when the provider's window opened
            ship_by=event.authorised_at + timedelta(days=settings_of(rt).ship_days),
            updated_at=now,
            version=row.version + 1,
        )
    )
    uow.emit(
        OrderPaid(
            order_id=row.id,
            listing_id=row.listing_id,
            buyer_id=row.buyer_id,
            seller_id=row.seller_id,
            amount_fen=int(row.amount_fen),
            paid_at=now,
        )
    )


def _paid_again(uow: UnitOfWork, row: Any, event: HoldAuthorised, now: datetime) -> None:
    """The buyer of a shipped order paid again: capture it into escrow at once (the goods left long ago)."""
    uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.hold_request_id == event.hold_request_id)
        .values(
            payment_status="held",
            hold_id=event.hold_id,
            decline_reason=None,
            updated_at=now,
            version=row.version + 1,
        )
    )
    uow.emit(
        HoldEscrowRequested(hold_request_id=row.hold_request_id, requested_by=REQUESTER, requested_at=now)
    )


def when_hold_declined_record(event: HoldDeclined, uow: UnitOfWork) -> None:
    uow.session.execute(
        update(orders)
        .where(
            orders.c.hold_request_id == event.hold_request_id,
            orders.c.status.in_((m.PENDING_PAYMENT, m.SHIPPED)),  # shipped: the buyer paying again
            orders.c.payment_status.in_(WAITING_FOR_BUYER),
        )
        .values(
            payment_status="declined",
            decline_reason=f"{event.decline_code}: {event.reason}",
            updated_at=datetime.now(UTC),
        )
    )


def when_hold_captured_record(event: HoldCaptured, uow: UnitOfWork) -> None:
    uow.session.execute(
        update(orders)
        .where(orders.c.hold_request_id == event.hold_request_id)
        .values(payment_status="captured", payout_id=event.payout_id, updated_at=datetime.now(UTC))
    )


def when_hold_escrowed_record(event: HoldEscrowed, uow: UnitOfWork) -> None:
    uow.session.execute(
        update(orders)
        .where(orders.c.hold_request_id == event.hold_request_id, orders.c.payment_status == "held")
        # in escrow: whatever failed before is settled (`payment.attempt` still says the buyer paid again)
        .values(payment_status=m.IN_ESCROW, payment_failure_reason=None, updated_at=datetime.now(UTC))
    )


def when_hold_cancelled_record(event: HoldCancelled, uow: UnitOfWork) -> None:
    """The hold was let go: at our request (the order is closed already), or by the provider (the authorisation
    lapsed): a paid order is then cancelled before the seller ships what nobody would pay for; a shipped one whose
    money had not reached escrow asks the buyer to pay again."""
    row = _by_hold(uow, event.hold_request_id)
    if row is None:
        return  # not ours, or a request the order no longer uses (the buyer was asked to pay again)
    if row.status == m.SHIPPED and row.payment_status not in SETTLED_AFTER_SHIPPING:
        pay_again(uow, row, event.reason)
        return
    uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id)
        .values(payment_status="cancelled", updated_at=datetime.now(UTC))
    )
    if row.status == m.PAID:
        lapsed = event.reason == AUTHORISATION_LAPSED
        close(uow, row, "cancel", reason=AUTHORISATION_LAPSED if lapsed else "payment_cancelled")
    elif row.status == m.SHIPPED:
        log.error(
            "the escrow of shipped order %s was let go (%s): the seller is not paid", row.id, event.reason
        )


def pay_again(uow: UnitOfWork, row: Any, reason: str) -> None:
    """A shipped order's payment failed before its money reached escrow (the provider let the authorisation go in
    the moment between the ship and the capture): the goods are on their way and nobody holds the money. The order
    stays shipped, says why, cannot complete, and the buyer is asked to pay again: a new request (id by attempt,
    so a report about the old one no longer finds the order), captured into escrow as soon as it is authorised."""
    now = datetime.now(UTC)
    attempt = int(row.payment_attempt) + 1
    hold_request_id = m.hold_request_id_for(row.id, attempt)
    uow.session.execute(
        update(orders)
        .where(orders.c.id == row.id, orders.c.hold_request_id == row.hold_request_id)
        .values(
            hold_request_id=hold_request_id,
            payment_attempt=attempt,
            payment_status="requested",
            client_secret=None,
            hold_id=None,
            decline_reason=None,
            payment_failure_reason=reason,
            payment_failed_at=now,
            updated_at=now,
            version=row.version + 1,
        )
    )
    uow.emit(
        HoldRequested(
            hold_request_id=hold_request_id,
            payer_user_id=row.buyer_id,
            amount_fen=int(row.amount_fen),
            reference_id=row.id,
            requested_by=REQUESTER,
            requested_at=now,
        )
    )
    log.warning(
        "shipped order %s: the buyer's payment %s was let go before its escrow capture (%s); the buyer is asked to "
        "pay again (%s)",
        row.id,
        row.hold_request_id,
        reason,
        hold_request_id,
    )


def when_hold_refunded_record(event: HoldRefunded, uow: UnitOfWork) -> None:
    uow.session.execute(
        update(orders)
        .where(orders.c.hold_request_id == event.hold_request_id)
        .values(payment_status="refunded", updated_at=datetime.now(UTC))
    )


def when_hold_capture_refused_log(event: HoldCaptureRefused, uow: UnitOfWork) -> None:
    """A refused escrow capture after shipping follows the HoldCancelled that asked the buyer to pay again (payments
    reports the lost hold first): by then the order uses another payment. Anything else is a bug: logged."""
    if _by_hold(uow, event.hold_request_id) is None:
        log.info(
            "payments refused to capture payment %s of order %s (%s): the order uses another payment now",
            event.hold_request_id,
            event.reference_id,
            event.reason,
        )
        return
    log.error(
        "payments refused to capture the escrow of order %s (%s, the payment is %s): the seller is not paid",
        event.reference_id,
        event.reason,
        event.current_state,
    )


def when_hold_cancel_refused_log(event: HoldCancelRefused, uow: UnitOfWork) -> None:
    log.error(
        "payments refused to give back the escrow of order %s (%s, the payment is %s)",
        event.reference_id,
        event.reason,
        event.current_state,
    )
