"""Listings and orders (二手担保交易) as state machines, and the rules that need no I/O.

Listing:

    draft ──publish──▶ published ──reserve──▶ reserved ──sell──▶ sold
      ▲  ◀──unpublish──   │  ▲                   │
      │  (cert revoked)   │  └──────release──────┘ (order expired or cancelled)
      │                   └──withdraw──▶ withdrawn
      └──────────── withdraw (draft) ──────────────▶ withdrawn

Order (escrow: the buyer's money is held by payments, not paid to the seller, until receipt is confirmed):

    pending_payment ──pay (hold authorised)──▶ paid ──ship──▶ shipped ──confirm (or auto)──▶ completed
          │                                      │               │
          ├──expire──▶ expired                   │               └──refund──▶ cancelled (escrow refunded)
          └──cancel──▶ cancelled                 └──cancel──▶ cancelled (hold released; also when not shipped
                                                                         by `ship_by`)

Shipping captures the hold into the platform's escrow (an authorisation lapses at the provider, captured money
does not); completion releases it to the seller less the fee, and only money in escrow can be released: a
shipped order completes only once its payment is `escrowed`. If the provider let the authorisation go between
the ship and the capture, the order stays shipped and the buyer is asked to pay again (a new payment, captured
into escrow as soon as it is authorised). After shipping only the seller (taking the item back) or an admin (a
dispute decided for the buyer) gives the money back or closes the payment: `refund`.

Every transition is checked against the tables below; anything else is a Conflict (409) naming the current state.
"""

from __future__ import annotations

from services.kernel.errors import Conflict

DRAFT, PUBLISHED, RESERVED, SOLD, WITHDRAWN = "draft", "published", "reserved", "sold", "withdrawn"
LISTING_TRANSITIONS: dict[str, dict[str, str]] = {
    "publish": {DRAFT: PUBLISHED},
    "update": {DRAFT: DRAFT, PUBLISHED: PUBLISHED},
    "withdraw": {DRAFT: WITHDRAWN, PUBLISHED: WITHDRAWN},
    "reserve": {PUBLISHED: RESERVED},
    "release": {RESERVED: PUBLISHED},
    "release_to_draft": {RESERVED: DRAFT},
    "sell": {RESERVED: SOLD},
    "unpublish": {PUBLISHED: DRAFT},
}

PENDING_PAYMENT, PAID, SHIPPED, COMPLETED = "pending_payment", "paid", "shipped", "completed"
CANCELLED, EXPIRED = "cancelled", "expired"
ORDER_TRANSITIONS: dict[str, dict[str, str]] = {
    "pay": {PENDING_PAYMENT: PAID},
    "ship": {PAID: SHIPPED},
    "confirm": {SHIPPED: COMPLETED},
    "cancel": {PENDING_PAYMENT: CANCELLED, PAID: CANCELLED},
    "expire": {PENDING_PAYMENT: EXPIRED},
    "refund": {SHIPPED: CANCELLED},
}
# orders that hold their listing: at most one per listing (a partial unique index says so too)
ACTIVE_ORDER = frozenset({PENDING_PAYMENT, PAID, SHIPPED, COMPLETED})
ORDER_EDGES = frozenset((a, b) for t in ORDER_TRANSITIONS.values() for a, b in t.items())


def next_listing_state(action: str, current: str) -> str:
    to = LISTING_TRANSITIONS[action].get(current)
    if to is None:
        raise Conflict(
            f"cannot {action.replace('_', ' ')} a listing that is {current}", current_state=current
        )
    return to


def next_order_state(action: str, current: str) -> str:
    to = ORDER_TRANSITIONS[action].get(current)
    if to is None:
        raise Conflict(f"cannot {action} an order that is {current}", current_state=current)
    return to


def platform_fee_fen(amount_fen: int, fee_bps: int, min_fee_fen: int = 0) -> int:
    """The platform's fee on a completed order: `fee_bps` basis points, half-up to the fen, at least
    `min_fee_fen`, and always less than the amount (the seller receives at least 1 fen)."""
    if amount_fen <= 0:
        return 0
    fee = max((amount_fen * fee_bps + 5000) // 10000, min_fee_fen)
    return max(0, min(fee, amount_fen - 1))


def hold_request_id_for(order_id: str, attempt: int = 1) -> str:
    """Deterministic: re-sending an order's hold request names the same hold at payments. A buyer asked to pay
    again (their authorisation was let go after shipping, before the escrow capture) pays a new request."""
    return f"hr_{order_id}" if attempt == 1 else f"hr_{order_id}-{attempt}"


# the order's payment once the money is with the platform: the one state in which a shipped order may complete
IN_ESCROW = "escrowed"


def reputation_score(ratings: list[int]) -> float | None:
    """Mean rating, one decimal (None without reviews)."""
    if not ratings:
        return None
    return round(sum(ratings) / len(ratings) + 1e-9, 1)
