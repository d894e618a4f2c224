"""Helpers for pricing service tests: the platform behind the gateway, tokens, events through the real bus."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.booking import PickupSettled, SettledLine
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.ids import new_id
from services.kernel.outbox import outbox_t
from services.kernel.settings import Settings
from services.pricing.compute import today_in
from services.pricing.domain.methodology import load_methodology

SHANGHAI = ZoneInfo("Asia/Shanghai")
CITY = "110105"  # 北京市朝阳区
CITY2 = "110108"  # 北京市海淀区
PROVINCE = "110000"
OTHER_CITY = "440305"  # 深圳市南山区 (no data: falls back to national)


def today() -> date:
    return today_in(load_methodology())


def day_ago(n: int) -> date:
    return today() - timedelta(days=n)


def at(day: date, hour: int = 11, minute: int = 0) -> datetime:
    """A moment of a Shanghai calendar day."""
    return datetime.combine(day, time(hour, minute), SHANGHAI)


async def app_client(aiohttp_client, settings: Settings):  # noqa: ANN001, ANN201
    platform = Platform(settings).prepare()
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def auth(settings: Settings, user_id: str, *roles: str, firms: tuple[str, ...] = ()) -> dict[str, str]:
    principal = Principal(user_id, frozenset(roles), frozenset(firms), frozenset((f, "owner") for f in firms))
    return {"Authorization": "Bearer " + issue_token(settings, principal)}


def firm(settings: Settings, firm_id: str) -> dict[str, str]:
    return auth(settings, "us_owner_" + firm_id, "firm", firms=(firm_id,))


def admin(settings: Settings) -> dict[str, str]:
    return auth(settings, "us_admin", "admin")


def publish(platform: Platform, *events: Event) -> None:
    """Publish events as their owning service would (straight onto the bus), then let every consumer catch up."""
    envs = [Envelope.wrap(e) for e in events]
    platform.bus.publish(
        [Record(topic=topic_of(env.type), key=env.subject, value=env.to_bytes()) for env in envs]
    )
    platform.drain()


def settled(
    *,
    firm_id: str,
    day: date,
    lines: list[tuple[str, str, int]],
    city_code: str = CITY,
    resident_id: str | None = None,
    collector_user_id: str | None = None,
    hour: int = 11,
) -> PickupSettled:
    """A booking.pickup.settled event: lines of (category, qty, unit_price_fen)."""
    resident_id = resident_id or new_id("us")
    when = at(day, hour)
    return PickupSettled(
        pickup_id=new_id("pk"),
        resident_id=resident_id,
        collector_id=new_id("cl"),
        collector_user_id=collector_user_id or new_id("us"),
        firm_id=firm_id,
        city_code=city_code,
        lines=[
            SettledLine(
                category=c,
                tax_code="1080103010000000000",
                unit="kg",
                qty=q,
                unit_price_fen=p,
                amount_fen=round(float(q) * p),
            )
            for c, q, p in lines
        ],
        total_fen=sum(round(float(q) * p) for _, q, p in lines),
        weighed_at=when,
        settled_at=when,
    )


def observation(
    category: str = "metal.steel",
    *,
    day: date,
    price: int,
    qty: str = "100",
    kind: str = "trade",
    city_code: str = CITY,
    evidence: bool = True,
    **extra: object,
) -> dict:
    body: dict = {
        "category": category,
        "city_code": city_code,
        "unit_price_fen": price,
        "qty": qty,
        "kind": kind,
        "observed_at": at(day).isoformat(),
    }
    if evidence and kind == "trade":
        body["evidence"] = {"kind": "weighbridge_ticket", "number": new_id("wb")}
    return body | extra


def outbox_events(platform: Platform, service: str, type_suffix: str) -> list[dict]:
    """Events a service wrote to its outbox (sent or not), decoded, oldest first."""
    with platform[service].db.engine.connect() as c:
        rows = c.execute(outbox_t.select().order_by(outbox_t.c.seq)).all()
    out = []
    for r in rows:
        if r.type.endswith(type_suffix):
            out.append(Envelope.from_bytes(r.payload).data)
    return out


def utc(dt: datetime) -> datetime:
    return dt.astimezone(UTC)
