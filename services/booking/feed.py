"""The live job feed (GET /v1/jobs/stream, text/event-stream): new, taken, removed and urgent jobs pushed to the
collectors connected to this process whose area and categories they concern.

Fan-out is in-process. It is fed two ways, deduplicated by event id:
- directly, by this process's own commands once their unit of work commits (no delay);
- from the bus: while anyone is connected, a pump thread reads `booking.pickup` from its end onwards, without a
  consumer group (every process must see every event; a group would split them). That brings in what other
  booking processes and the Celery timers (expiry, escalation) did. In the distributed run, each booking process
  streams what it sees on the bus this way.

The feed is best effort: a client that reconnects re-reads GET /v1/jobs; a client that cannot keep up is
disconnected rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from services.kernel.events import Envelope
from services.kernel.ports import Port

from . import geo

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)

TOPIC = "booking.pickup"
_T = "cn.recycle.booking.pickup."
REQUESTED, ACCEPTED = _T + "requested.v1", _T + "accepted.v1"
CANCELLED, EXPIRED, ESCALATED = _T + "cancelled.v1", _T + "expired.v1", _T + "expiry_escalated.v1"
FEED_TYPES = frozenset({REQUESTED, ACCEPTED, CANCELLED, EXPIRED, ESCALATED})
PUMP_IDLE_EXIT_S = 30.0


@dataclass(eq=False)
class Listener:
    """One connected collector: where they look, where they may work, what they collect."""

    user_id: str
    lat: float
    lng: float
    radius_km: float
    area_lat: float
    area_lng: float
    area_radius_km: float
    categories: frozenset[str]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(256))
    overflowed: bool = False

    def near(self, lat: float, lng: float) -> float | None:
        d = geo.haversine_km(self.lat, self.lng, lat, lng)
        if (
            d > self.radius_km
            or geo.haversine_km(self.area_lat, self.area_lng, lat, lng) > self.area_radius_km
        ):
            return None
        return d

    def offer(self, frame: bytes | None) -> None:
        """Thread-safe: queue a frame on the listener's loop (None closes the stream)."""

        def put() -> None:
            if self.overflowed:
                return
            try:
                self.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self.overflowed = True  # too slow: the stream ends, the client reconnects and re-lists
                self.queue.get_nowait()
                self.queue.put_nowait(None)

        with contextlib.suppress(RuntimeError):  # the loop is gone
            self.loop.call_soon_threadsafe(put)


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
    return f"id: {env.id}\nevent: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class JobFeed:
    def __init__(self, rt: ServiceRuntime):
        self.rt = rt
        self._listeners: set[Listener] = set()
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pump: threading.Thread | None = None

    # --- listeners --------------------------------------------------------------------------------
    def add(self, who: Listener) -> None:
        with self._lock:
            self._listeners.add(who)
            if self._pump is None or not self._pump.is_alive():
                self._pump = threading.Thread(target=self._run_pump, name="booking-feed-pump", daemon=True)
                self._pump.start()

    def remove(self, who: Listener) -> None:
        with self._lock:
            self._listeners.discard(who)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    # --- events -----------------------------------------------------------------------------------
    def publish(self, envelopes: list[Envelope]) -> None:
        """Hand events to the listeners they concern; each event id once. Thread-safe."""
        with self._lock:
            fresh = []
            for env in envelopes:
                if env.type not in FEED_TYPES or env.id in self._seen:
                    continue
                self._seen[env.id] = None
                fresh.append(env)
            while len(self._seen) > 20_000:
                self._seen.popitem(last=False)
            listeners = list(self._listeners)
        for env in fresh:
            for who in listeners:
                try:
                    frame = frame_for(env, who)
                except (KeyError, ValueError):
                    log.warning("job feed: cannot render event %s (%s)", env.id, env.type)
                    break
                if frame is not None:
                    who.offer(frame)

    def _run_pump(self) -> None:
        """Read booking.pickup from its end while anyone listens (no group: every process sees everything)."""
        from .settings import settings_of

        bus = self.rt.bus
        interval = settings_of(self.rt).feed_poll_interval_s
        positions: dict[int, int] | None = None
        idle_since = None
        while True:
            if not self._listeners:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since > PUMP_IDLE_EXIT_S:
                    with self._lock:
                        if not self._listeners:
                            self._pump = None
                            return
            else:
                idle_since = None
            try:
                if positions is None:
                    ends = bus.end_offsets(TOPIC)
                    positions = {p: ends.get(p, 0) for p in range(bus.partitions(TOPIC))}
                moved = False
                for p, offset in positions.items():
                    records = bus.read(TOPIC, p, offset, 500)
                    if records:
                        positions[p] = records[-1].offset + 1
                        moved = True
                        self.publish([Envelope.from_bytes(r.value) for r in records])
                if not moved:
                    time.sleep(interval)
            except Exception:  # noqa: BLE001 - the bus is down or closing: try again later
                log.warning("job feed: reading %s failed; retrying", TOPIC, exc_info=True)
                time.sleep(1.0)


JOB_FEED: Port[JobFeed] = Port("booking.job_feed")


def feed_of(rt: ServiceRuntime) -> JobFeed:
    return rt.ports.get_or_set(JOB_FEED, lambda: JobFeed(rt))


def publish_local(rt: ServiceRuntime, envelopes: list[Envelope]) -> None:
    """Called by this process's commands after their commit."""
    f = rt.ports.get(JOB_FEED)
    if f is not None and f.listeners:
        f.publish(envelopes)
