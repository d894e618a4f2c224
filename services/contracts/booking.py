"""Events the booking service publishes that other services consume (topic `booking.pickup`, key = pickup id).

Locations travel as a precision-7 geohash (a ~150 m cell) and a district name, never as the address.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.kernel.events import Event


class PickupEvent(Event):
    """Every event of the `booking.pickup` topic (booking's internal ones too)."""

    topic = "booking.pickup"
    key_field = "pickup_id"
    source = "/booking"
    pickup_id: str


class SettledLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    category: str
    tax_code: str
    unit: str  # kg | piece
    qty: str  # decimal string, 3 places
    unit_price_fen: int
    amount_fen: int


class PickupSettled(PickupEvent):
    type = "cn.recycle.booking.pickup.settled.v1"
    doc = (
        "The resident confirmed the weighed amounts. Pricing takes the lines as transactions; invoicing issues the "
        "reverse invoice from the collector's firm to the resident and answers with invoice.issued / blocked."
    )
    resident_id: str
    collector_id: str
    collector_user_id: str
    firm_id: str
    city_code: str
    lines: list[SettledLine]
    total_fen: int
    weighed_at: datetime
    settled_at: datetime
    payout_id: str | None = None  # the payout the saga will request (gross − withheld)
    quote_total_fen: int | None = None
