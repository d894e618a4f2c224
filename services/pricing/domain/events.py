"""Events of the pricing service that no other service consumes (yet). No contributor's identity (methodology §10)."""

from __future__ import annotations

from datetime import date, datetime

from services.kernel.events import Event


class ObservationRecorded(Event):
    """A price input was recorded (from a settled pickup, a firm's report, later a cleared lot trade)."""

    type = "cn.recycle.pricing.observation.recorded.v1"
    topic = "pricing.observation"
    key_field = "series_key"
    source = "/pricing"
    doc = (
        "One price input with its tier and source kind; the counterparty stays inside pricing (never in an "
        "event). Keyed by series so each city series' inputs stay in order."
    )

    observation_id: int
    series_key: str  # "<category>@<city_code>"
    category: str
    city_code: str
    day: date
    tier: str  # transaction | verified_deal | quote
    kind: str  # trade | quote
    unit_price_fen: int
    qty: str  # decimal string, 3 places, in the category's unit
    related_party: bool
    input_source: str  # where the input came from: booking.pickup | api (| trading.trade)
    observed_at: datetime
    recorded_at: datetime
