"""Which events pricing listens to: price inputs, one handler per source.

- `pricing.observations`  booking.pickup: PickupSettled → one `transaction` input per paying, indexed line;
- `pricing.trades`        trading.trade: TradeSettled → one `transaction` input on the delivered weight.

Every handler is idempotent on its own (an input's `source_key` is unique), on top of the consumer's inbox.
"""

from __future__ import annotations

from datetime import UTC

from services.contracts.booking import PickupSettled
from services.contracts.trading import TradeSettled
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.events import current_event_id
from services.kernel.money import parse_qty
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import categories

from .domain.methodology import load_methodology
from .domain.observations import SettledLine, draft_from_settled_trade, drafts_from_settled_pickup
from .intake import record_observations


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        group("pricing.observations", {PickupSettled: when_pickup_settled_record_transactions}),
        group("pricing.trades", {TradeSettled: when_trade_settled_record_transaction}),
    ]


def when_pickup_settled_record_transactions(event: PickupSettled, uow: UnitOfWork) -> None:
    """One `transaction` input per paying, indexed line of the settled pickup (the buyer is the firm)."""
    m = load_methodology()
    drafts = drafts_from_settled_pickup(
        pickup_id=event.pickup_id,
        event_id=current_event_id.get(),
        firm_id=event.firm_id,
        resident_id=event.resident_id,
        collector_user_id=event.collector_user_id,
        city_code=event.city_code,
        settled_at=event.settled_at if event.settled_at.tzinfo else event.settled_at.replace(tzinfo=UTC),
        lines=[SettledLine(ln.category, parse_qty(ln.qty), ln.unit_price_fen) for ln in event.lines],
        indexed=frozenset(m.categories),
        pays=frozenset(c for c, cat in categories().items() if cat.pays),
    )
    record_observations(uow, drafts, methodology=m)


def when_trade_settled_record_transaction(event: TradeSettled, uow: UnitOfWork) -> None:
    """One `transaction` input (tier 1) on the delivered weight of a settled trade; related parties flagged."""
    m = load_methodology()
    settled_at = event.settled_at if event.settled_at.tzinfo else event.settled_at.replace(tzinfo=UTC)
    draft = draft_from_settled_trade(
        trade_id=event.trade_id,
        event_id=current_event_id.get(),
        buyer_firm_id=event.buyer_firm_id,
        category=event.category,
        city_code=event.city_code,
        price_fen_per_t=event.price_fen_per_t,
        delivered_t=parse_qty(event.delivered_t),
        related_party=event.related_party,
        settled_at=settled_at,
        indexed=frozenset(c for c, spec in m.categories.items() if spec.unit == "kg"),
    )
    if draft is not None:
        record_observations(uow, [draft], methodology=m)
