"""The auction and delivery rules as named rules over plain facts. Pure: the service loads the facts (the lot as
it is now, its copy of the bidder firm, the deposit) and the configured numbers (`AuctionRules`).

A bid rule answers `None` (satisfied) or a `Refusal` with a machine-readable reason, which the API returns as 422
`{reason}`. Reasons, in the order they are checked:
- `lot_closed`                 the lot is not open, or its end time has passed;
- `own_lot`                    the bidder is the seller;
- `firm_unverified`            the bidder is not a verified firm;
- `related_firm`               the bidder is related to the seller (someone acts for both);
- `deposit_required`           the lot asks for a deposit and the bidder's is not held;
- `below_reserve`              ascending only: under the reserve price (a sealed bid under reserve is accepted
                               but cannot win);
- `below_best_plus_increment`  ascending only: under the best bid plus the lot's minimum increment.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from .model import ASCENDING, LOT_OPEN, SEALED


@dataclass(frozen=True)
class AuctionRules:
    """The configurable numbers (TRADING_* settings)."""

    extension_window_s: int = 120  # a bid this close to the end of an ascending lot extends it ...
    extension_s: int = 300  # ... to this long after the bid (never shorter than the window)
    default_min_increment_fen_per_t: int = 1000  # 10 yuan per tonne

    def __post_init__(self) -> None:
        if self.extension_s < self.extension_window_s:
            raise ValueError(
                "extension_s must be at least extension_window_s, or a late bid could not extend"
            )


@dataclass(frozen=True)
class Refusal:
    reason: str
    detail: str


@dataclass(frozen=True)
class LotFacts:
    """A lot as a bid is judged against it (read under the lot's row lock)."""

    lot_id: str
    seller_firm_id: str
    status: str
    auction: str
    reserve_fen_per_t: int
    min_increment_fen_per_t: int
    ends_at: datetime
    best_fen_per_t: int | None
    deposit_fen: int


@dataclass(frozen=True)
class BidderFacts:
    firm_id: str
    verified: bool
    related_to_seller: bool
    deposit_held: bool


@dataclass(frozen=True)
class BidAccepted:
    """What an accepted bid does to the lot."""

    becomes_best: bool  # ascending: always; sealed: nothing is shown, the close decides
    ends_at: datetime  # the lot's end after the bid
    extended: bool
    below_reserve: bool  # sealed only: kept, but cannot win


# --- the bid rules, in order ------------------------------------------------------------------------------


def lot_must_be_open(lot: LotFacts, at: datetime) -> Refusal | None:
    if lot.status != LOT_OPEN or at >= lot.ends_at:
        return Refusal("lot_closed", f"lot {lot.lot_id} is closed for bids")
    return None


def bidder_must_not_be_seller(lot: LotFacts, bidder: BidderFacts) -> Refusal | None:
    if bidder.firm_id == lot.seller_firm_id:
        return Refusal("own_lot", "a firm cannot bid on its own lot")
    return None


def bidder_must_be_verified_firm(bidder: BidderFacts) -> Refusal | None:
    if not bidder.verified:
        return Refusal("firm_unverified", f"firm {bidder.firm_id} is not a verified firm")
    return None


def bidder_must_not_be_related(bidder: BidderFacts) -> Refusal | None:
    if bidder.related_to_seller:
        return Refusal("related_firm", "the bidding firm is related to the seller (someone acts for both)")
    return None


def deposit_must_be_held(lot: LotFacts, bidder: BidderFacts) -> Refusal | None:
    if lot.deposit_fen > 0 and not bidder.deposit_held:
        return Refusal(
            "deposit_required",
            f"this lot asks for a deposit of {lot.deposit_fen} fen: POST /v1/lots/{lot.lot_id}/deposit",
        )
    return None


def ascending_bid_must_reach_reserve(lot: LotFacts, price: int) -> Refusal | None:
    if lot.auction == ASCENDING and price < lot.reserve_fen_per_t:
        return Refusal("below_reserve", f"the reserve is {lot.reserve_fen_per_t} fen per tonne")
    return None


def ascending_bid_must_beat_best(lot: LotFacts, price: int) -> Refusal | None:
    if lot.auction == ASCENDING and lot.best_fen_per_t is not None:
        floor = lot.best_fen_per_t + lot.min_increment_fen_per_t
        if price < floor:
            return Refusal(
                "below_best_plus_increment", f"bid at least {floor} fen per tonne (best + increment)"
            )
    return None


def judge_bid(
    lot: LotFacts, bidder: BidderFacts, price: int, at: datetime, rules: AuctionRules
) -> BidAccepted | Refusal:
    """Accept or refuse a bid of `price` fen per tonne placed at `at`."""
    for refusal in (
        lot_must_be_open(lot, at),
        bidder_must_not_be_seller(lot, bidder),
        bidder_must_be_verified_firm(bidder),
        bidder_must_not_be_related(bidder),
        deposit_must_be_held(lot, bidder),
        ascending_bid_must_reach_reserve(lot, price),
        ascending_bid_must_beat_best(lot, price),
    ):
        if refusal is not None:
            return refusal
    if lot.auction == SEALED:
        return BidAccepted(
            becomes_best=False,
            ends_at=lot.ends_at,
            extended=False,
            below_reserve=price < lot.reserve_fen_per_t,
        )
    ends_at, extended = extended_end(lot.ends_at, at, rules)
    return BidAccepted(becomes_best=True, ends_at=ends_at, extended=extended, below_reserve=False)


def extended_end(ends_at: datetime, at: datetime, rules: AuctionRules) -> tuple[datetime, bool]:
    """Anti-sniping (延时): a bid in the last `extension_window_s` moves the end to `extension_s` after the bid."""
    if ends_at - at <= timedelta(seconds=rules.extension_window_s):
        return max(ends_at, at + timedelta(seconds=rules.extension_s)), True
    return ends_at, False


# --- the close --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BidFacts:
    bid_id: str
    firm_id: str
    price_fen_per_t: int
    placed_at: datetime
    seq: int  # the order bids were recorded in: breaks ties of equal times


def winner(bids: Iterable[BidFacts], reserve_fen_per_t: int) -> BidFacts | None:
    """The best bid at or above reserve; equal prices go to the earliest bid. None: the lot is unsold."""
    eligible = [b for b in bids if b.price_fen_per_t >= reserve_fen_per_t]
    if not eligible:
        return None
    return min(eligible, key=lambda b: (-b.price_fen_per_t, b.placed_at, b.seq))


def losers(bids: Sequence[BidFacts], won: BidFacts | None) -> set[str]:
    """Firms that bid and did not win (their deposits are released at the close)."""
    return {b.firm_id for b in bids} - ({won.firm_id} if won else set())


# --- delivery on the weighbridge ticket ---------------------------------------------------------------------


@dataclass(frozen=True)
class DeliveryOutcome:
    amount_fen: int  # price × delivered weight, half-up to the fen
    fee_fen: int  # the platform's fee, taken from what the seller is paid
    within_tolerance: bool
    deviation_pct: Decimal  # (delivered − declared) / declared × 100, 2 places


def delivery_outcome(
    *, declared_kg: int, delivered_kg: int, price_fen_per_t: int, tolerance_pct: Decimal, fee_bps: int
) -> DeliveryOutcome:
    """Amount on the delivered weight; whether the weight is within ±tolerance of the declared one."""
    if declared_kg <= 0 or delivered_kg <= 0:
        raise ValueError("weights must be positive")
    amount = _half_up(Decimal(price_fen_per_t) * delivered_kg / 1000)
    fee = _half_up(Decimal(amount) * fee_bps / 10000)
    within = abs(delivered_kg - declared_kg) * 100 <= tolerance_pct * declared_kg
    deviation = (Decimal(delivered_kg - declared_kg) * 100 / declared_kg).quantize(
        Decimal("0.01"), ROUND_HALF_UP
    )
    return DeliveryOutcome(amount, fee, within, deviation)


def delivery_range_kg(declared_kg: int, max_deviation_pct: Decimal) -> tuple[int, int]:
    """The weighbridge weights a delivery of a lot of `declared_kg` may have (kilograms, both ends included): a
    ticket further off is not a weighing of this lot (a typo, another truck, the wrong unit), whoever would accept
    it, and it must not become an amount to pay."""
    span = Decimal(declared_kg) * max_deviation_pct / 100
    low = int((Decimal(declared_kg) - span).to_integral_value(rounding=ROUND_CEILING))
    return max(low, 1), int((Decimal(declared_kg) + span).to_integral_value(rounding=ROUND_FLOOR))


def _half_up(x: Decimal) -> int:
    return int(x.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- chain of custody -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IntakeLine:
    """A settled pickup line of one of the firm's collectors, and how much of it is not yet in a lot (grams)."""

    pickup_id: str
    line_no: int
    available_g: int


def allocate_intake(lines: Sequence[IntakeLine], need_g: int) -> list[tuple[IntakeLine, int]] | None:
    """Cover `need_g` grams from the oldest intake first; None if the intake does not cover it."""
    out: list[tuple[IntakeLine, int]] = []
    left = need_g
    for line in lines:
        if left <= 0:
            break
        take = min(line.available_g, left)
        if take > 0:
            out.append((line, take))
            left -= take
    return out if left <= 0 else None


def related_firms(a: str, b: str, members_a: frozenset[str], members_b: frozenset[str]) -> bool:
    """Two firms are related parties when they are the same firm or one person acts for both (owner, accountant,
    collector): the people are what accounts tells us; common control is what the price-index rule is about."""
    return a == b or bool(members_a & members_b)
