"""The live lots board (GET /v1/lots/stream, text/event-stream): new lots, best bids of ascending lots (with the
end time after anti-sniping extensions) and closes, pushed to the firms connected to this process.

A kernel live feed (`services/kernel/live_feed.py`: in-process fan-out, fed by this process's commits and by a
pump reading `trading.lot`, deduplicated by event id). That brings in what other trading processes and the closing
job (Celery) did.

Sealed lots never show a price before the close: their events carry none (LotBestBidChanged is published for
ascending lots only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from services.contracts.trading import LotBestBidChanged, LotClosed, LotListed
from services.kernel import live_feed
from services.kernel.events import Envelope
from services.kernel.ports import Port

from .store import lots

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime

TOPIC = "trading.lot"
FEED_TYPES = {
    LotListed.type: "lot.listed",
    LotBestBidChanged.type: "lot.best_bid",
    LotClosed.type: "lot.closed",
}


@dataclass(eq=False)
class Listener(live_feed.Listener):
    """One connected client: which lots it watches (all, one category, or one lot)."""

    category: str | None = None
    lot_id: str | None = None


def frame_for(env: Envelope, who: Listener, category_of: Callable[[str], str | None]) -> bytes | None:
    """The SSE frame of one event for one listener, or None if it does not concern them (`category_of`: a lot's
    category, for the events that carry none)."""
    name = FEED_TYPES.get(env.type)
    if name is None:
        return None
    d = env.data
    lot_id = d["lot_id"]
    if who.lot_id is not None and lot_id != who.lot_id:
        return None
    if who.category is not None and (d.get("category") or category_of(lot_id)) != who.category:
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
    return live_feed.sse_frame(env.id, name, data)


class LotFeed(live_feed.LiveFeed[Listener]):
    topic = TOPIC
    feed_types = FEED_TYPES
    name = "lot feed"

    def __init__(self, rt: ServiceRuntime):
        super().__init__(rt)
        # lot id → category, so a category filter applies to best-bid and close events (they carry no category)
        self.category_of: dict[str, str] = {}

    def note(self, env: Envelope) -> None:
        if env.type == LotListed.type:
            self._remember(env.data["lot_id"], env.data["category"])

    def _remember(self, lot_id: str, category: str) -> None:
        self.category_of[lot_id] = category
        while len(self.category_of) > 100_000:
            self.category_of.pop(next(iter(self.category_of)))

    def category(self, lot_id: str) -> str | None:
        """A lot's category: noted from its listing, or read once from the lots table. The feed only sees what
        happens while someone listens, so a lot listed before (or before a restart, or by another process) is
        not noted, and a category listener would never see its bids or its close."""
        known = self.category_of.get(lot_id)
        if known is None:
            with self.rt.db.session(readonly=True) as s:
                known = s.execute(select(lots.c.category).where(lots.c.id == lot_id)).scalar()
            if known is not None:
                self._remember(lot_id, known)
        return known

    def frame(self, env: Envelope, who: Listener) -> bytes | None:
        return frame_for(env, who, self.category)


LOT_FEED: Port[LotFeed] = Port("trading.lot_feed")


def feed_of(rt: ServiceRuntime) -> LotFeed:
    return rt.ports.get_or_set(LOT_FEED, lambda: LotFeed(rt))


def publish_local(rt: ServiceRuntime, envelopes: list[Envelope]) -> None:
    """Called by this process's commands after their commit."""
    live_feed.publish_local(rt, LOT_FEED, envelopes)


class Tx(live_feed.FeedingUnitOfWork):
    """A unit of work that also hands its lot events to this process's lots board once they are committed."""

    feed_port = LOT_FEED
