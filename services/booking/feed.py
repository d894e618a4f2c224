"""The live job feed (GET /v1/jobs/stream, text/event-stream): new, taken, removed and urgent jobs pushed to the
collectors connected to this process whose area and categories they concern.

A kernel live feed (`services/kernel/live_feed.py`: in-process fan-out, fed by this process's commits and by a
pump reading `booking.pickup`, deduplicated by event id). That brings in what other booking processes and the
Celery timers (expiry, escalation) did. In the distributed run, each booking process streams what it sees on the
bus this way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.kernel import live_feed
from services.kernel.events import Envelope
from services.kernel.ports import Port

from . import geo
from .settings import settings_of

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

TOPIC = "booking.pickup"
_T = "cn.recycle.booking.pickup."
REQUESTED, ACCEPTED = _T + "requested.v1", _T + "accepted.v1"
CANCELLED, EXPIRED, ESCALATED = _T + "cancelled.v1", _T + "expired.v1", _T + "expiry_escalated.v1"
FEED_TYPES = frozenset({REQUESTED, ACCEPTED, CANCELLED, EXPIRED, ESCALATED})


@dataclass(eq=False)
class Listener(live_feed.Listener):
    """One connected collector: where they look, where they may work, what they collect."""

    user_id: str
    lat: float
    lng: float
    radius_km: float
    area_lat: float
    area_lng: float
    area_radius_km: float
    categories: frozenset[str]

    def near(self, lat: float, lng: float) -> float | None:
        d = geo.haversine_km(self.lat, self.lng, lat, lng)
        if (
            d > self.radius_km
            or geo.haversine_km(self.area_lat, self.area_lng, lat, lng) > self.area_radius_km
        ):
            return None
        return d


def frame_for(env: Envelope, who: Listener) -> bytes | None:
    """The SSE frame of one event for one listener, or None if it does not concern them."""
    d = env.data
    lat, lng = geo.decode(d["geohash"]).center
    dist = who.near(lat, lng)
    if dist is None:
        return None
    if env.type == REQUESTED:
        cats = [it["category"] for it in d["items"]]
        if not set(cats) <= who.categories:
            return None
        name = "job.new"
        data = {
            "id": d["pickup_id"],
            "district": d["district"],
            "city_code": d["city_code"],
            "distance_km": round(dist, 1),
            "items": d["items"],
            "window": {"start": d["window_start"], "end": d["window_end"]},
            "quote_total_fen": d["quote_total_fen"],
        }
    elif env.type == ACCEPTED:
        name = "job.taken"
        data = {"id": d["pickup_id"], "by_you": d["collector_user_id"] == who.user_id}
    elif env.type == ESCALATED:
        name = "job.urgent"
        data = {
            "id": d["pickup_id"],
            "district": d["district"],
            "distance_km": round(dist, 1),
            "window_start": d["window_start"],
            "minutes_left": d["minutes_left"],
        }
    elif env.type == CANCELLED:
        if d["previous_status"] != "requested":
            return None
        name, data = "job.removed", {"id": d["pickup_id"], "reason": "cancelled"}
    elif env.type == EXPIRED:
        name, data = "job.removed", {"id": d["pickup_id"], "reason": "expired"}
    else:
        return None
    return live_feed.sse_frame(env.id, name, data)


class JobFeed(live_feed.LiveFeed[Listener]):
    topic = TOPIC
    feed_types = FEED_TYPES
    name = "job feed"

    def frame(self, env: Envelope, who: Listener) -> bytes | None:
        return frame_for(env, who)

    def poll_interval_s(self) -> float:
        return settings_of(self.rt).feed_poll_interval_s


JOB_FEED: Port[JobFeed] = Port("booking.job_feed")


def feed_of(rt: ServiceRuntime) -> JobFeed:
    return rt.ports.get_or_set(JOB_FEED, lambda: JobFeed(rt))


def publish_local(rt: ServiceRuntime, envelopes: list[Envelope]) -> None:
    """Called by this process's commands after their commit."""
    live_feed.publish_local(rt, JOB_FEED, envelopes)
