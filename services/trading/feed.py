"""The live lots board (GET /v1/lots/stream, text/event-stream): new lots, best bids of ascending lots (with the
end time after anti-sniping extensions) and closes, pushed to the firms connected to this process.

Fan-out is in-process, fed two ways and deduplicated by event id (the pattern of booking's job feed):
- directly, by this process's own commands once their unit of work commits (no delay);
- from the bus: while anyone is connected, a pump thread reads `trading.lot` from its end onwards, without a
  consumer group (every process must see every event). That brings in what other trading processes and the
  closing job (Celery) did.

Sealed lots never show a price before the close: their events carry none (LotBestBidChanged is published for
ascending lots only). Best effort: a client that reconnects re-reads GET /v1/lots; a client that cannot keep up
is disconnected rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from services.contracts.trading import LotBestBidChanged, LotClosed, LotListed
from services.kernel.db import UnitOfWork
from services.kernel.events import Envelope
from services.kernel.ports import Port

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

log = logging.getLogger(__name__)

TOPIC = "trading.lot"
FEED_TYPES = {
    LotListed.type: "lot.listed",
    LotBestBidChanged.type: "lot.best_bid",
    LotClosed.type: "lot.closed",
}
PUMP_IDLE_EXIT_S = 30.0
POLL_INTERVAL_S = 0.1


@dataclass(eq=False)
class Listener:
    """One connected client: which lots it watches (all, one category, or one lot)."""

    loop: asyncio.AbstractEventLoop
    category: str | None = None
    lot_id: str | None = None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(256))
    overflowed: bool = False
    categories_of: dict[str, str] = field(default_factory=dict)  # lot id → category, learnt from lot.listed

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

        try:
            self.loop.call_soon_threadsafe(put)
        except RuntimeError:  # the loop is gone
            pass


def frame_for(env: Envelope, who: Listener, category_of: dict[str, str]) -> bytes | None:
    """The SSE frame of one event for one listener, or None if it does not concern them."""
    name = FEED_TYPES.get(env.type)
    if name is None:
        return None
    d = env.data
    lot_id = d["lot_id"]
    if who.lot_id is not None and lot_id != who.lot_id:
        return None
    if who.category is not None and category_of.get(lot_id, d.get("category")) != who.category:
        return None
    if name == "lot.listed":
        data: dict[str, Any] = {
            k: d[k]
            for k in (
                "lot_id",
                "category",
                "grade",
                "qty_t",
                "city_code",
                "auction",
                "reserve_price_fen_per_t",
                "ends_at",
            )
        }
    elif name == "lot.best_bid":
        data = {
            k: d[k] for k in ("lot_id", "price_fen_per_t", "bid_count", "ends_at", "extended", "placed_at")
        }
    else:
        data = {k: d.get(k) for k in ("lot_id", "status", "price_fen_per_t", "bid_count", "closed_at")}
    return f"id: {env.id}\nevent: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class LotFeed:
    def __init__(self, rt: ServiceRuntime):
        self.rt = rt
        self._listeners: set[Listener] = set()
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pump: threading.Thread | None = None
        # lot id → category, so a category filter applies to best-bid and close events (they carry no category)
        self.category_of: dict[str, str] = {}

    def add(self, who: Listener) -> None:
        with self._lock:
            self._listeners.add(who)
            if self._pump is None or not self._pump.is_alive():
                self._pump = threading.Thread(target=self._run_pump, name="trading-feed-pump", daemon=True)
                self._pump.start()

    def remove(self, who: Listener) -> None:
        with self._lock:
            self._listeners.discard(who)

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, envelopes: list[Envelope]) -> None:
        """Hand events to the listeners they concern; each event id once. Thread-safe."""
        with self._lock:
            fresh = []
            for env in envelopes:
                if env.type not in FEED_TYPES or env.id in self._seen:
                    continue
                self._seen[env.id] = None
                if env.type == LotListed.type:
                    self.category_of[env.data["lot_id"]] = env.data["category"]
                fresh.append(env)
            while len(self._seen) > 20_000:
                self._seen.popitem(last=False)
            while len(self.category_of) > 100_000:
                self.category_of.pop(next(iter(self.category_of)))
            listeners = list(self._listeners)
        for env in fresh:
            for who in listeners:
                try:
                    frame = frame_for(env, who, self.category_of)
                except (KeyError, ValueError):
                    log.warning("lot feed: cannot render event %s (%s)", env.id, env.type)
                    break
                if frame is not None:
                    who.offer(frame)

    def _run_pump(self) -> None:
        """Read trading.lot from its end while anyone listens (no group: every process sees everything)."""
        bus = self.rt.bus
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
                    time.sleep(POLL_INTERVAL_S)
            except Exception:  # noqa: BLE001 - the bus is down or closing: try again later
                log.warning("lot feed: reading %s failed; retrying", TOPIC, exc_info=True)
                time.sleep(1.0)


LOT_FEED: Port[LotFeed] = Port("trading.lot_feed")


def feed_of(rt: ServiceRuntime) -> LotFeed:
    return rt.ports.get_or_set(LOT_FEED, lambda: LotFeed(rt))


def publish_local(rt: ServiceRuntime, envelopes: list[Envelope]) -> None:
    """Called by this process's commands after their commit."""
    f = rt.ports.get(LOT_FEED)
    if envelopes and f is not None and f.listeners:
        f.publish(envelopes)


class Tx(UnitOfWork):
    """A unit of work that also hands its lot events to this process's lots board once they are committed."""

    def __init__(self, rt: ServiceRuntime, readonly: bool = False):
        super().__init__(rt.db, readonly)
        self.rt = rt
        self.envelopes: list[Envelope] = []

    def emit(self, event: Any) -> None:
        env = event if isinstance(event, Envelope) else Envelope.wrap(event)
        self.envelopes.append(env)
        super().emit(env)

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            publish_local(self.rt, self.envelopes)
