"""Which events pricing listens to: price inputs, one handler per source.

- `pricing.observations`  booking.pickup: PickupSettled → one `transaction` input per paying, indexed line.

Cleared lot trades join this group as one more handler (trading.trade). Every handler is idempotent on its own
(an input's `source_key` is unique), on top of the consumer's inbox.
"""

from __future__ import annotations

from datetime import UTC

from services.contracts.booking import PickupSettled
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.db import UnitOfWork
from services.kernel.events import current_event_id
from services.kernel.money import parse_qty
from services.kernel.runtime import ServiceRuntime
from services.kernel.taxonomy import categories

from .domain.methodology import load_methodology
from .domain.observations import SettledLine, drafts_from_settled_pickup
from .intake import record_observations


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [group("pricing.observations", {PickupSettled: when_pickup_settled_record_transactions})]


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
