"""Events the booking service publishes (topic `booking.pickup`, key = pickup id) that only booking consumes (its
live job feed); `services/contracts/booking.py` holds those other services consume.

Locations travel as a precision-7 geohash (a ~150 m cell) and a district name, never as the address: the live job
feed and other services need where a job roughly is, not who lives there.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from services.contracts.booking import PickupEvent


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


class PickupRequested(PickupEvent):
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


class PickupAccepted(PickupEvent):
    type = "cn.recycle.booking.pickup.accepted.v1"
    doc = "A verified collector grabbed the job (抢单); exactly one per pickup. The feed shows it as taken."
    collector_id: str
    collector_user_id: str
    firm_id: str
    geohash: str
    accepted_at: datetime


class PickupArrived(PickupEvent):
    type = "cn.recycle.booking.pickup.arrived.v1"
    collector_id: str
    arrived_at: datetime


class PickupWeighed(PickupEvent):
    type = "cn.recycle.booking.pickup.weighed.v1"
    doc = "On-site weighing (final quantities at the prices in force now); the estimate stays on record beside it."
    collector_id: str
    lines: list[WeighedLine]
    total_fen: int
    quote_total_fen: int
    reason: str | None = None
    scale_reading: str | None = None
    weighed_at: datetime


class PickupDisputed(PickupEvent):
    type = "cn.recycle.booking.pickup.disputed.v1"
    doc = "The resident does not accept the weighed amounts; the collector may weigh again, or an admin cancels."
    resident_id: str
    collector_id: str
    reason: str
    disputed_at: datetime


class PickupCancelled(PickupEvent):
    type = "cn.recycle.booking.pickup.cancelled.v1"
    by: str  # resident | admin
    previous_status: str
    reason: str | None = None
    geohash: str
    cancelled_at: datetime


class PickupRescheduled(PickupEvent):
    type = "cn.recycle.booking.pickup.rescheduled.v1"
    doc = "The resident moved the window of a pickup nobody had accepted yet."
    old_window_start: datetime
    window_start: datetime
    window_end: datetime
    rescheduled_at: datetime


class PickupExpiryEscalated(PickupEvent):
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


class PickupExpired(PickupEvent):
    type = "cn.recycle.booking.pickup.expired.v1"
    doc = "Nobody accepted the job before its window opened."
    resident_id: str
    geohash: str
    window_start: datetime
    expired_at: datetime


class PickupNoShow(PickupEvent):
    type = "cn.recycle.booking.pickup.no_show.v1"
    doc = "party=resident: the collector arrived and waited in vain; party=collector: nobody came in the window."
    party: str  # resident | collector
    collector_id: str | None
    recorded_at: datetime


class PickupRated(PickupEvent):
    type = "cn.recycle.booking.pickup.rated.v1"
    doc = "One side rated the other after settlement (feeds reputation)."
    rater_role: str  # resident | collector
    rater_user_id: str
    ratee_user_id: str
    score: int
    rated_at: datetime


class PickupComplaintFiled(PickupEvent):
    type = "cn.recycle.booking.pickup.complaint_filed.v1"
    doc = "A party of the pickup filed a complaint with evidence; customer service takes it from here."
    complaint_id: str
    by_role: str
    kind: str
    evidence_count: int
    filed_at: datetime
