"""Events the booking service publishes (topic `booking.pickup`, key = pickup id).

Locations travel as a precision-7 geohash (a ~150 m cell) and a district name, never as the address: the live job
feed and other services need where a job roughly is, not who lives there.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.kernel.events import Event


class _PickupEvent(Event):
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


class EstimatedItem(BaseModel):
    model_config = ConfigDict(frozen=True)
    category: str
    est_qty: str


class WeighedLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    category: str
    unit: str
    qty: str
    unit_price_fen: int
    amount_fen: int


class PickupRequested(_PickupEvent):
    type = "cn.recycle.booking.pickup.requested.v1"
    doc = (
        "A resident booked a doorstep pickup; it is open for collectors near it (the live job feed shows it)."
    )
    resident_id: str
    city_code: str
    district: str
    geohash: str  # precision 7
    items: list[EstimatedItem]
    window_start: datetime
    window_end: datetime
    quote_total_fen: int
    requested_at: datetime


class PickupAccepted(_PickupEvent):
    type = "cn.recycle.booking.pickup.accepted.v1"
    doc = "A verified collector grabbed the job (抢单); exactly one per pickup. The feed shows it as taken."
    collector_id: str
    collector_user_id: str
    firm_id: str
    geohash: str
    accepted_at: datetime


class PickupArrived(_PickupEvent):
    type = "cn.recycle.booking.pickup.arrived.v1"
    collector_id: str
    arrived_at: datetime


class PickupWeighed(_PickupEvent):
    type = "cn.recycle.booking.pickup.weighed.v1"
    doc = "On-site weighing (final quantities at the prices in force now); the estimate stays on record beside it."
    collector_id: str
    lines: list[WeighedLine]
    total_fen: int
    quote_total_fen: int
    reason: str | None = None
    scale_reading: str | None = None
    weighed_at: datetime


class PickupSettled(_PickupEvent):
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


class PickupDisputed(_PickupEvent):
    type = "cn.recycle.booking.pickup.disputed.v1"
    doc = "The resident does not accept the weighed amounts; the collector may weigh again, or an admin cancels."
    resident_id: str
    collector_id: str
    reason: str
    disputed_at: datetime


class PickupCancelled(_PickupEvent):
    type = "cn.recycle.booking.pickup.cancelled.v1"
    by: str  # resident | admin
    previous_status: str
    reason: str | None = None
    geohash: str
    cancelled_at: datetime


class PickupRescheduled(_PickupEvent):
    type = "cn.recycle.booking.pickup.rescheduled.v1"
    doc = "The resident moved the window of a pickup nobody had accepted yet."
    old_window_start: datetime
    window_start: datetime
    window_end: datetime
    rescheduled_at: datetime


class PickupExpiryEscalated(_PickupEvent):
    type = "cn.recycle.booking.pickup.expiry_escalated.v1"
    doc = (
        "Nobody has accepted the job and its window opens soon: dispatch should widen the search or push it "
        "(the feed re-announces it as urgent to collectors near it)."
    )
    city_code: str
    district: str
    geohash: str
    window_start: datetime
    minutes_left: int
    escalated_at: datetime


class PickupExpired(_PickupEvent):
    type = "cn.recycle.booking.pickup.expired.v1"
    doc = "Nobody accepted the job before its window opened."
    resident_id: str
    geohash: str
    window_start: datetime
    expired_at: datetime


class PickupNoShow(_PickupEvent):
    type = "cn.recycle.booking.pickup.no_show.v1"
    doc = "party=resident: the collector arrived and waited in vain; party=collector: nobody came in the window."
    party: str  # resident | collector
    collector_id: str | None
    recorded_at: datetime


class PickupRated(_PickupEvent):
    type = "cn.recycle.booking.pickup.rated.v1"
    doc = "One side rated the other after settlement (feeds reputation)."
    rater_role: str  # resident | collector
    rater_user_id: str
    ratee_user_id: str
    score: int
    rated_at: datetime


class PickupComplaintFiled(_PickupEvent):
    type = "cn.recycle.booking.pickup.complaint_filed.v1"
    doc = "A party of the pickup filed a complaint with evidence; customer service takes it from here."
    complaint_id: str
    by_role: str
    kind: str
    evidence_count: int
    filed_at: datetime
