"""Price inputs (价格采集) as they enter the pricing service: which sources count, at which tier, on which day.

Pure rules, no I/O. Every source (settled pickups, firms' reports, later cleared lot trades) is turned into
`ObservationDraft`s here; `intake.record_observations` stores any of them the same way, so adding a source is
one translation function and one event handler.

Tiers (DOMAIN_RULES "Scrap price indices": concluded platform transactions > verified third-party deals >
firm bids/offers):

- a settled pickup line is a concluded platform transaction: tier `transaction`;
- a firm's report of a deal it concluded off the platform (`kind: "trade"`) is a *verified* third-party deal,
  tier `verified_deal`, only when it names the document that proves it (weighbridge ticket, invoice or payment
  record: `evidence`). Without one it is the firm's own unverified statement of a price, which is what the
  bottom tier is for: it is kept as `kind: "trade"` but counted at tier `quote`;
- a firm's bid or offer (`kind: "quote"`) is tier `quote`. It can never become a transaction.

Listing asks (what a seller hopes to get) are not accepted at all. Self-dealing is flagged `related_party`
(kept on record, excluded from every computation with that reason): a collector buying from their own
resident account, a firm reporting a deal with itself or with another firm its reporter acts for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Literal
from zoneinfo import ZoneInfo

SourceKind = Literal["trade", "quote"]
EVIDENCE_KINDS = ("weighbridge_ticket", "invoice", "payment_record")

SOURCE_PICKUP = "booking.pickup"
SOURCE_API = "api"
SOURCE_TRADE = "trading.trade"  # cleared lot trades, when the trading service exists


@dataclass(frozen=True, slots=True)
class ObservationDraft:
    """One price input before it is stored. `counterparty` is the price-setting party ("firm:<id>")."""

    category: str
    city_code: str
    unit_price_fen: int
    qty: Decimal  # in the category's unit, at most 3 places
    kind: SourceKind
    tier: str
    counterparty: str
    related_party: bool
    source: str
    source_ref: str
    source_key: str  # unique per source line: a redelivered event records nothing twice
    observed_at: datetime
    source_event_id: str | None = None
    evidence: str | None = None

    def __post_init__(self) -> None:
        if self.observed_at.tzinfo is None:
            raise ValueError("observed_at must carry an offset")
        if self.qty * 1000 != (self.qty * 1000).to_integral_value():
            raise ValueError(f"qty {self.qty} has more than 3 decimal places")

    @property
    def qty_milli(self) -> int:
        return int(self.qty * 1000)


def trading_day(observed_at: datetime, timezone: str) -> date:
    """The publication day an input belongs to: its calendar day in the methodology's time zone."""
    return observed_at.astimezone(ZoneInfo(timezone)).date()


def tier_for_firm_report(kind: SourceKind, evidence: str | None) -> str:
    """A firm's own report: a documented trade is a verified deal; anything else is a firm statement (quote)."""
    if kind == "trade" and evidence:
        return "verified_deal"
    return "quote"


def firm_report_is_self_dealing(
    reporting_firm: str, counterparty_firm: str | None, reporter_firms: frozenset[str]
) -> bool:
    """A firm trading with itself, or with another firm the same person acts for, is a related party."""
    if counterparty_firm is None:
        return False
    return counterparty_firm == reporting_firm or counterparty_firm in reporter_firms


@dataclass(frozen=True, slots=True)
class SettledLine:
    category: str
    qty: Decimal
    unit_price_fen: int


def drafts_from_settled_pickup(
    *,
    pickup_id: str,
    event_id: str | None,
    firm_id: str,
    resident_id: str,
    collector_user_id: str,
    city_code: str,
    settled_at: datetime,
    lines: list[SettledLine],
    indexed: frozenset[str],
    pays: frozenset[str],
) -> list[ObservationDraft]:
    """The transactions of a settled pickup (互联网+回收): one input per line, priced by the buying firm.

    Lines are skipped when their category is not indexed by the methodology, when the category does not pay the
    resident (booking prices glass, batteries and bulky items at 0 whatever the market says, so their 0 is not a
    market price), or when nothing was weighed. A collector settling with their own resident account is
    self-dealing.
    """
    related = resident_id == collector_user_id
    out = []
    for i, line in enumerate(lines):
        if line.category not in indexed or line.category not in pays or line.qty <= 0:
            continue
        out.append(
            ObservationDraft(
                category=line.category,
                city_code=city_code,
                unit_price_fen=line.unit_price_fen,
                qty=line.qty,
                kind="trade",
                tier="transaction",
                counterparty=f"firm:{firm_id}",
                related_party=related,
                source=SOURCE_PICKUP,
                source_ref=pickup_id,
                source_key=f"{SOURCE_PICKUP}:{pickup_id}:{i}:{line.category}",
                observed_at=settled_at,
                source_event_id=event_id,
            )
        )
    return out


def draft_from_settled_trade(
    *,
    trade_id: str,
    event_id: str | None,
    buyer_firm_id: str,
    category: str,
    city_code: str,
    price_fen_per_t: int,
    delivered_t: Decimal,
    related_party: bool,
    settled_at: datetime,
    indexed: frozenset[str],
) -> ObservationDraft | None:
    """A settled B2B lot trade (trading.trade settled): one concluded platform transaction, tier `transaction`,
    priced per kilogram like every other input (fen per tonne / 1000, half-up to the fen) on the weighbridge weight.
    Trades between related firms stay on record, flagged, and are excluded from every computation. None when the
    category is not indexed by weight (`indexed`: the methodology's kg series) or nothing was delivered."""
    if category not in indexed or delivered_t <= 0:
        return None
    per_kg = int((Decimal(price_fen_per_t) / 1000).quantize(Decimal(1), rounding="ROUND_HALF_UP"))
    return ObservationDraft(
        category=category,
        city_code=city_code,
        unit_price_fen=per_kg,
        qty=(delivered_t * 1000).quantize(Decimal(1)),
        kind="trade",
        tier="transaction",
        counterparty=f"firm:{buyer_firm_id}",
        related_party=related_party,
        source=SOURCE_TRADE,
        source_ref=trade_id,
        source_key=f"{SOURCE_TRADE}:{trade_id}",
        observed_at=settled_at,
        source_event_id=event_id,
    )
