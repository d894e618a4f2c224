"""Live feeds (text/event-stream): one topic's events pushed to the clients connected to this process, each sent
what concerns it (a service's feed decides that in `frame`).

Fan-out is in-process. A feed is fed two ways, deduplicated by event id:
- directly, by this process's own commands once their unit of work commits (no delay: `FeedingUnitOfWork`);
- from the bus: while anyone is connected, a pump thread reads the topic from its end onwards, without a consumer
  group (every process must see every event; a group would split them). That brings in what the service's other
  processes and its Celery jobs did.

Best effort: a client that reconnects re-reads the list it follows; a client that cannot keep up is disconnected
rather than buffered without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from aiohttp import web

from .db import UnitOfWork
from .events import Envelope
from .ports import Port

if TYPE_CHECKING:
    from .runtime import ServiceRuntime

log = logging.getLogger(__name__)

PUMP_IDLE_EXIT_S = 30.0
SEEN_MAX = 20_000  # event ids remembered for the dedupe of the two ways in


def sse_frame(event_id: str, name: str, data: Any) -> bytes:
    return f"id: {event_id}\nevent: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


@dataclass(eq=False, kw_only=True)
class Listener:
    """One connected client: its loop and the frames queued for it (a service's listener adds what it follows)."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[bytes | None] = field(default_factory=lambda: asyncio.Queue(256))
    overflowed: bool = False

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


L = TypeVar("L", bound=Listener)


class LiveFeed(Generic[L]):
    """The listeners of one topic in this process and the pump that reads it while they are there. A service's feed
    names its topic, the event types it shows and renders an event for one listener (`frame`)."""

    topic: ClassVar[str]
    feed_types: ClassVar[Collection[str]]
    name: ClassVar[str]  # in logs

    def __init__(self, rt: ServiceRuntime):
        self.rt = rt
        self._listeners: set[L] = set()
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._pump: threading.Thread | None = None

    def frame(self, env: Envelope, who: L) -> bytes | None:
        """The SSE frame of one event for one listener, or None if it does not concern them."""
        raise NotImplementedError

    def poll_interval_s(self) -> float:
        """How long the pump waits when the topic has nothing new (read as it starts)."""
        return 0.1

    def note(self, env: Envelope) -> None:
        """Learn from a fresh event before it is rendered (called under the feed's lock)."""

    # --- listeners --------------------------------------------------------------------------------
    def add(self, who: L) -> None:
        with self._lock:
            self._listeners.add(who)
            if self._pump is None or not self._pump.is_alive():
                self._pump = threading.Thread(
                    target=self._run_pump, name=f"{self.topic}-feed-pump", daemon=True
                )
                self._pump.start()

    def remove(self, who: L) -> None:
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
                if env.type not in self.feed_types or env.id in self._seen:
                    continue
                self._seen[env.id] = None
                self.note(env)
                fresh.append(env)
            while len(self._seen) > SEEN_MAX:
                self._seen.popitem(last=False)
            listeners = list(self._listeners)
        for env in fresh:
            for who in listeners:
                try:
                    frame = self.frame(env, who)
                except (KeyError, ValueError):
                    log.warning("%s: cannot render event %s (%s)", self.name, env.id, env.type)
                    break
                if frame is not None:
                    who.offer(frame)

    def _run_pump(self) -> None:
        """Read the topic from its end while anyone listens (no group: every process sees everything)."""
        bus = self.rt.bus
        interval = self.poll_interval_s()
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
                    ends = bus.end_offsets(self.topic)
                    positions = {p: ends.get(p, 0) for p in range(bus.partitions(self.topic))}
                moved = False
                for p, offset in positions.items():
                    records = bus.read(self.topic, p, offset, 500)
                    if records:
                        positions[p] = records[-1].offset + 1
                        moved = True
                        self.publish([Envelope.from_bytes(r.value) for r in records])
                if not moved:
                    time.sleep(interval)
            except Exception:  # noqa: BLE001 - the bus is down or closing: try again later
                log.warning("%s: reading %s failed; retrying", self.name, self.topic, exc_info=True)
                time.sleep(1.0)


def publish_local(rt: ServiceRuntime, port: Port[Any], envelopes: list[Envelope]) -> None:
    """Hand events this process committed to its feed on `port`, if anyone is listening."""
    feed = rt.ports.get(port)
    if envelopes and feed is not None and feed.listeners:
        feed.publish(envelopes)


class FeedingUnitOfWork(UnitOfWork):
    """A unit of work that also hands its events to this process's live feed (`feed_port`) once committed."""

    feed_port: ClassVar[Port[Any]]

    def __init__(self, rt: ServiceRuntime, readonly: bool = False):
        super().__init__(rt.db, readonly)
        self.rt = rt
        self.envelopes: list[Envelope] = []

    def emit(self, event: Any) -> None:
        env = event if isinstance(event, Envelope) else Envelope.wrap(event)
        self.envelopes.append(env)
        super().emit(env)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        super().__exit__(exc_type, exc, tb)
        if exc_type is None:
            publish_local(self.rt, self.feed_port, self.envelopes)


async def stream(request: web.Request, feed: LiveFeed[L], who: L, heartbeat_s: float) -> web.StreamResponse:
    """Serve `who` its frames as text/event-stream until it goes away or is dropped, with a comment every
    `heartbeat_s` of silence so that proxies keep the connection."""
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "X-Request-Id": request.get("request_id", ""),
        }
    )
    await resp.prepare(request)
    feed.add(who)
    try:
        await resp.write(b"retry: 3000\n: connected\n\n")
        while True:
            try:
                frame = await asyncio.wait_for(who.queue.get(), timeout=heartbeat_s)
            except TimeoutError:
                await resp.write(b": ping\n\n")
                continue
            if frame is None:
                break
            await resp.write(frame)
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        feed.remove(who)
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    return resp
