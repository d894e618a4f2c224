"""Helpers for booking tests: the platform, tokens, events from other services through the real bus, windows."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.app import create_app_over
from services.booking.settings import configure
from services.bootstrap import Platform
from services.contracts.accounts import CollectorVerified
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event
from services.kernel.ids import new_id
from services.kernel.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 北京市朝阳区, around 国贸
CITY = "110105"
HOME = (39.9087, 116.4605)


# Booking and what it needs (pricing seeds the reference prices). Tests that play invoicing and payments
# themselves (publishing their events through the bus) leave the real ones out, so nothing answers for them.
BOOKING_ONLY = ["pricing", "booking"]


def platform_for(settings: Settings, services: list[str] | None = BOOKING_ONLY, **booking: Any) -> Platform:
    platform = Platform(settings, services=services).prepare()
    configure(platform["booking"], **booking)
    return platform


async def app_client(
    aiohttp_client, settings: Settings, services: list[str] | None = BOOKING_ONLY, **booking: Any
):  # noqa: ANN001
    platform = platform_for(settings, services, **booking)
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def token(settings: Settings, user_id: str, *roles: str, firms: tuple[str, ...] = ()) -> str:
    return issue_token(settings, Principal(user_id, frozenset(roles), frozenset(firms)))


def auth(settings: Settings, user_id: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + token(settings, user_id, *roles)}


def principal(user_id: str, *roles: str) -> Principal:
    return Principal(user_id, frozenset(roles))


def publish(platform: Platform, *events: Event | Envelope) -> list[Envelope]:
    """Publish events as another service would (straight onto the bus), then let every consumer catch up."""
    envs = [e if isinstance(e, Envelope) else Envelope.wrap(e) for e in events]
    platform.bus.publish([Record(topic=_topic(env), key=env.subject, value=env.to_bytes()) for env in envs])
    platform.drain()
    return envs


def _topic(env: Envelope) -> str:
    from services.kernel.events import topic_of

    return topic_of(env.type)


def verify_collector(
    platform: Platform,
    user_id: str,
    *,
    lat: float = HOME[0],
    lng: float = HOME[1],
    radius_km: float = 10.0,
    categories: list[str] | None = None,
    firm_id: str = "fm_test",
) -> str:
    collector_id = "cl_" + user_id
    publish(
        platform,
        CollectorVerified(
            collector_id=collector_id,
            user_id=user_id,
            firm_id=firm_id,
            name_masked="王*",
            lat=lat,
            lng=lng,
            radius_km=radius_km,
            categories=categories
            or [
                "paper.cardboard",
                "paper.books",
                "metal.copper",
                "metal.steel",
                "plastic.pet",
                "appliance.fridge",
            ],
            verified_at=datetime.now(UTC),
        ),
    )
    return collector_id


def window(day: date | None = None, start: time = time(10, 0), minutes: int = 30) -> dict[str, str]:
    """A window on `day` (default: tomorrow, Shanghai time)."""
    day = day or (datetime.now(SHANGHAI) + timedelta(days=1)).date()
    s = datetime.combine(day, start, SHANGHAI)
    return {"start": s.isoformat(), "end": (s + timedelta(minutes=minutes)).isoformat()}


def booking_body(
    *,
    lat: float = HOME[0],
    lng: float = HOME[1],
    city_code: str = CITY,
    items: list[dict] | None = None,
    win: dict | None = None,
    notes: str = "",
) -> dict:
    return {
        "address": {
            "text": "朝阳区建国门外大街1号 3单元 1201",
            "city_code": city_code,
            "lat": lat,
            "lng": lng,
        },
        "window": win or window(),
        "items": items
        or [
            {"category": "paper.cardboard", "est_qty": "12.5"},
            {"category": "metal.copper", "est_qty": "1.2"},
        ],
        "notes": notes,
    }


def uid(prefix: str = "u") -> str:
    return new_id(prefix)


def seed_open_jobs(
    rt,
    n: int,
    center: tuple[float, float],
    spread_km: float,
    seed: int = 1,  # noqa: ANN001
    categories: tuple[str, ...] = ("paper.cardboard", "metal.copper"),
    batch: int = 5000,
) -> list[tuple[str, float, float]]:
    """Insert `n` open (requested) pickups scattered uniformly over a square around `center`, straight into
    booking's tables (fast: for dispatch tests and the benchmark). Returns (id, lat, lng) of each."""
    import math
    import random

    from services.booking import geo
    from services.booking.store import pickup_lines, pickups
    from services.kernel import pii

    rnd = random.Random(seed)
    now = datetime.now(UTC)
    start = datetime.combine((datetime.now(SHANGHAI) + timedelta(days=1)).date(), time(10, 0), SHANGHAI)
    start = start.astimezone(UTC)
    address = pii.encrypt(rt.settings, "测试地址")
    dlat = spread_km / geo.KM_PER_DEG_LAT
    dlng = spread_km / (geo.KM_PER_DEG_LAT * math.cos(math.radians(center[0])))
    out = []
    for i in range(0, n, batch):
        rows, lines = [], []
        for _ in range(min(batch, n - i)):
            lat = center[0] + rnd.uniform(-dlat, dlat)
            lng = center[1] + rnd.uniform(-dlng, dlng)
            pid = new_id("pk")
            out.append((pid, lat, lng))
            rows.append(
                dict(
                    id=pid,
                    resident_id="res_seed",
                    status="requested",
                    version=1,
                    city_code=CITY,
                    district="北京市 朝阳区",
                    address_enc=address,
                    lat=lat,
                    lng=lng,
                    geohash=geo.encode(lat, lng),
                    area=geo.encode(lat, lng, 5),
                    window_start=start,
                    window_end=start + timedelta(minutes=30),
                    notes="",
                    categories=" ".join(categories),
                    quote_total_fen=1000,
                    created_at=now,
                    updated_at=now,
                    weigh_count=0,
                    payout_attempts=0,
                )
            )
            lines += [
                dict(
                    pickup_id=pid,
                    category=c,
                    unit="kg",
                    tax_code="x",
                    est_qty="5.000",
                    est_unit_price_fen=100,
                    est_amount_fen=500,
                    est_price_region="000000",
                )
                for c in categories
            ]
        with rt.db.session() as s, s.begin():
            s.execute(pickups.insert(), rows)
            s.execute(pickup_lines.insert(), lines)
    return out
