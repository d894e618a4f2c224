"""Booking routes: parse → handler (in a thread) → reply. Paths and field names follow shared/API.md."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from services.kernel import live_feed
from services.kernel.db import UnitOfWork
from services.kernel.errors import ValidationFailed
from services.kernel.http import Ctx, Router, parse_body

from . import dispatch, handlers, queries
from .domain.commands import (
    BookPickup,
    CancelPickup,
    DisputePickup,
    FileComplaint,
    JobsQuery,
    PickupsQuery,
    RatePickup,
    ReschedulePickup,
    WeighPickup,
)
from .feed import Listener, feed_of
from .settings import settings_of
from .store import categories

router = Router("booking")

RESIDENT = {"resident"}
COLLECTOR = {"collector"}


class CategoryOut(BaseModel):
    code: str
    name: str
    unit: str | None
    parent: str | None
    min_qty: str | None = None
    pays: bool | None = None


class QuoteLineOut(BaseModel):
    category: str
    est_qty: str
    unit_price_fen: int
    amount_fen: int


class QuoteOut(BaseModel):
    lines: list[QuoteLineOut]
    total_fen: int


class PayoutOut(BaseModel):
    id: str | None
    amount_fen: int | None
    status: str | None


class PickupOut(BaseModel):
    """A pickup as its resident, its collector or an admin sees it (more fields than listed here)."""

    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    quote: QuoteOut
    collector_id: str | None = None
    total_fen: int | None = None
    withheld_fen: int | None = None
    payout: PayoutOut | None = None


class PickupPage(BaseModel):
    items: list[PickupOut]
    next_cursor: str | None


class JobOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    district: str
    distance_km: float
    quote_total_fen: int


class JobPage(BaseModel):
    model_config = ConfigDict(extra="allow")
    items: list[JobOut]
    next_cursor: str | None


class RatingOut(BaseModel):
    pickup_id: str
    rater_role: str
    ratee_user_id: str
    score: int
    comment: str


class ComplaintOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    pickup_id: str
    status: str


class ComplaintPage(BaseModel):
    items: list[ComplaintOut]
    next_cursor: str | None


@router.get("/v1/categories", public=True, response=list[CategoryOut])
async def list_categories(ctx: Ctx) -> list[dict]:
    """The category taxonomy (families and leaves, with unit: kg or piece)."""

    def load() -> list[dict]:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            rows = uow.session.execute(select(categories).order_by(categories.c.code)).all()
        return [
            dict(
                code=r.code,
                name=r.name,
                unit=r.unit or None,
                parent=r.parent,
                min_qty=r.min_qty if r.parent else None,
                pays=r.pays if r.parent else None,
            )
            for r in rows
        ]

    return await ctx.run(load)


# --- residents -------------------------------------------------------------------------------------


@router.post("/v1/pickups", roles=RESIDENT, body=BookPickup, response=PickupOut, status=201)
async def book_pickup(ctx: Ctx) -> dict:
    """Book a doorstep pickup: address, time window, estimated items; the reply carries the quote."""
    return await handlers.book_async(ctx.runtime, ctx.user, ctx.body)


@router.replay_of(book_pickup)
async def book_pickup_replayed(ctx: Ctx, made: str) -> dict:
    return await ctx.run(queries.booked, ctx.runtime, ctx.user, made)


@router.get("/v1/pickups", authenticated=True, query=PickupsQuery, response=PickupPage)
async def list_pickups(ctx: Ctx) -> dict:
    """Pickups the caller booked or accepted, newest first (`?mine=1&status=&limit=&cursor=`)."""
    return await ctx.run(queries.list_pickups, ctx.runtime, ctx.user, ctx.query)


@router.get("/v1/pickups/{id}", authenticated=True, response=PickupOut, owner="pickup")
async def get_pickup(ctx: Ctx) -> dict:
    """One pickup: its resident, the collector who accepted it, or an admin."""
    return await ctx.run(queries.get, ctx.runtime, ctx.user, ctx.params["id"])


@router.post("/v1/pickups/{id}/cancel", authenticated=True, response=PickupOut, owner="pickup")
async def cancel_pickup(ctx: Ctx) -> dict:
    """Cancel (the resident, within the cut-off; or an admin). Optional body `{reason}`."""
    cmd = await _optional_body(ctx, CancelPickup)
    return await ctx.run(handlers.cancel, ctx.runtime, ctx.user, ctx.params["id"], cmd)


@router.post(
    "/v1/pickups/{id}/reschedule",
    roles=RESIDENT,
    body=ReschedulePickup,
    response=PickupOut,
    owner="pickup",
    example={"window": {"start": "2030-05-06T10:00:00+08:00", "end": "2030-05-06T10:30:00+08:00"}},
)
async def reschedule_pickup(ctx: Ctx) -> dict:
    """Move the window of a pickup nobody has accepted yet (same rules as booking; capacity permitting)."""
    return await ctx.run(handlers.reschedule, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post("/v1/pickups/{id}/settle", roles=RESIDENT, response=PickupOut, owner="pickup")
async def settle_pickup(ctx: Ctx) -> dict:
    """The resident confirms the weighed amounts; the payout saga starts."""
    return await ctx.run(handlers.settle, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/pickups/{id}/dispute",
    roles=RESIDENT,
    body=DisputePickup,
    response=PickupOut,
    owner="pickup",
    example={"reason": "秤不准"},
)
async def dispute_pickup(ctx: Ctx) -> dict:
    """The resident does not accept the weighed amounts."""
    return await ctx.run(handlers.dispute, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post("/v1/pickups/{id}/payout/retry", roles={"resident", "admin"}, response=PickupOut, owner="pickup")
async def retry_payout(ctx: Ctx) -> dict:
    """Request a failed payout again (a new payout id)."""
    return await ctx.run(handlers.retry_payout, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/pickups/{id}/rating",
    roles={"resident", "collector"},
    body=RatePickup,
    response=RatingOut,
    status=201,
    owner="pickup",
    example={"score": 5, "comment": "准时"},
)
async def rate_pickup(ctx: Ctx) -> dict:
    """Rate the other side of a settled pickup (score 1..5), once per side."""
    return await ctx.run(handlers.rate, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.replay_of(rate_pickup)
async def rate_pickup_replayed(ctx: Ctx, made: str) -> dict:
    return await ctx.run(queries.rated, ctx.runtime, ctx.user, ctx.params["id"], made)


@router.post(
    "/v1/pickups/{id}/complaints",
    roles={"resident", "collector"},
    body=FileComplaint,
    response=ComplaintOut,
    status=201,
    owner="pickup",
    example={"kind": "weighing", "text": "秤不准", "evidence": [{"kind": "text", "note": "少了两公斤"}]},
)
async def file_complaint(ctx: Ctx) -> dict:
    """File a complaint about a pickup, with evidence."""
    return await ctx.run(handlers.complain, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.replay_of(file_complaint)
async def file_complaint_replayed(ctx: Ctx, made: str) -> dict:
    return await ctx.run(queries.complained, ctx.runtime, ctx.user, ctx.params["id"], made)


@router.get("/v1/pickups/{id}/complaints", authenticated=True, response=ComplaintPage, owner="pickup")
async def list_complaints(ctx: Ctx) -> dict:
    """Complaints about a pickup (its parties and admins)."""
    return await ctx.run(queries.list_complaints, ctx.runtime, ctx.user, ctx.params["id"])


# --- collectors --------------------------------------------------------------------------------------


@router.get("/v1/jobs", roles=COLLECTOR, query=JobsQuery, response=JobPage)
async def list_jobs(ctx: Ctx) -> dict:
    """Open pickups near the collector that they may take, nearest first (district and distance only)."""
    return await ctx.run(dispatch.list_jobs, ctx.runtime, ctx.user, ctx.query)


@router.post(
    "/v1/jobs/{id}/accept",
    roles=COLLECTOR,
    response=PickupOut,
    not_owned="an open job is any nearby verified collector's to grab (one wins)",
)
async def accept_job(ctx: Ctx) -> dict:
    """Grab a job (抢单): one collector wins; accepting again is idempotent, anyone else gets 409."""
    return await handlers.accept_async(ctx.runtime, ctx.user, ctx.params["id"])


@router.post("/v1/pickups/{id}/arrive", roles=COLLECTOR, response=PickupOut, owner="accepted_pickup")
async def arrive(ctx: Ctx) -> dict:
    """The accepting collector is at the door."""
    return await ctx.run(handlers.arrive, ctx.runtime, ctx.user, ctx.params["id"])


@router.post(
    "/v1/pickups/{id}/weigh",
    roles=COLLECTOR,
    body=WeighPickup,
    response=PickupOut,
    owner="accepted_pickup",
    example={
        "lines": [{"category": "paper.cardboard", "qty": "12.5"}, {"category": "metal.copper", "qty": "1.2"}]
    },
)
async def weigh(ctx: Ctx) -> dict:
    """The accepting collector records the weighed quantities (priced at today's prices)."""
    return await ctx.run(handlers.weigh, ctx.runtime, ctx.user, ctx.params["id"], ctx.body)


@router.post("/v1/pickups/{id}/no-show", roles=COLLECTOR, response=PickupOut, owner="accepted_pickup")
async def no_show(ctx: Ctx) -> dict:
    """The collector arrived and nobody answered (after the configured wait)."""
    return await ctx.run(handlers.report_no_show, ctx.runtime, ctx.user, ctx.params["id"])


# --- replies rebuilt for a retry whose reply was lost after the commit (services/kernel/idempotency.py) ----------


@router.replays(
    cancel_pickup, reschedule_pickup, settle_pickup, dispute_pickup, retry_payout, arrive, weigh, no_show
)
async def pickup_as_it_stands(ctx: Ctx) -> dict:
    return await ctx.run(queries.as_it_stands, ctx.runtime, ctx.user, ctx.params["id"])


@router.replay_of(accept_job)
async def accept_job_replayed(ctx: Ctx, made: str) -> dict:
    return await ctx.run(queries.accepted, ctx.runtime, ctx.user, ctx.params["id"], made)


@router.get("/v1/jobs/stream", roles=COLLECTOR, query=JobsQuery, raw=True)
async def job_stream(ctx: Ctx) -> web.StreamResponse:
    """Live feed (text/event-stream) of jobs near the collector: job.new, job.taken, job.removed, job.urgent."""
    q: JobsQuery = ctx.query
    s = settings_of(ctx.runtime)
    if (q.lat is None) != (q.lng is None):
        raise ValidationFailed.field("lat", "give lat and lng together")

    def collector() -> Any:
        with UnitOfWork(ctx.runtime.db, readonly=True) as uow:
            return handlers.collector_of(uow.session, ctx.user)

    col = await ctx.run(collector)
    lat, lng = (q.lat, q.lng) if q.lat is not None else (col.lat, col.lng)
    who = Listener(
        user_id=col.user_id,
        lat=lat,
        lng=lng,
        radius_km=min(q.radius_km or col.radius_km, s.jobs_max_radius_km),
        area_lat=col.lat,
        area_lng=col.lng,
        area_radius_km=col.radius_km,
        categories=frozenset(col.categories.split()),
        loop=asyncio.get_running_loop(),
        queue=asyncio.Queue(s.feed_queue_size),
    )
    return await live_feed.stream(ctx.request, feed_of(ctx.runtime), who, s.feed_heartbeat_s)


async def _optional_body(ctx: Ctx, model: type[BaseModel]) -> Any:
    # the kernel's input rules (content type, depth limit, control characters, strict numbers) apply here too
    return await parse_body(ctx.request, model, optional=True)
