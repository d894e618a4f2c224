"""Helpers for the stats tests: the stats service alone behind the gateway, other services' events published
straight onto the real bus as their publishers would, tokens."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time
from decimal import Decimal
from zoneinfo import ZoneInfo

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.booking import PickupSettled, SettledLine
from services.contracts.trading import TradeAwarded, TradeSettled
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.settings import Settings
from services.kernel.taxonomy import leaf

SHANGHAI = ZoneInfo("Asia/Shanghai")
_seq = itertools.count(1)


def platform_for(settings: Settings) -> Platform:
    return Platform(settings, services=["stats"]).prepare()


async def app_client(aiohttp_client, settings: Settings):  # noqa: ANN001, ANN201
    platform = platform_for(settings)
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def publish(platform: Platform, *events: Event, drain: bool = True) -> list[Envelope]:
    envs = [Envelope.wrap(e) for e in events]
    platform.bus.publish(
        [Record(topic=topic_of(env.type), key=env.subject, value=env.to_bytes()) for env in envs]
    )
    if drain:
        platform.drain()
    return envs


def at(day: date, hour: int = 10, minute: int = 0) -> datetime:
    """`day` at `hour` o'clock in China, as UTC."""
    return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI).astimezone(UTC)


def settled(
    *,
    resident: str,
    firm: str,
    lines: list[tuple[str, str, int]],
    on: date,
    hour: int = 10,
    minute: int = 0,
    city_code: str = "110105",
    collector: str = "cl_1",
    pickup_id: str | None = None,
) -> PickupSettled:
    """A settled pickup: lines of (category, qty, amount_fen); the unit follows the taxonomy."""
    when = at(on, hour, minute)
    sl = [
        SettledLine(
            category=c,
            tax_code=leaf(c).tax_code,
            unit=leaf(c).unit,
            qty=q,
            unit_price_fen=int(Decimal(a) / Decimal(q)) if Decimal(q) else 0,
            amount_fen=a,
        )
        for c, q, a in lines
    ]
    return PickupSettled(
        pickup_id=pickup_id or f"pk_{next(_seq):08d}",
        resident_id=resident,
        collector_id=collector,
        collector_user_id=f"u_{collector}",
        firm_id=firm,
        city_code=city_code,
        lines=sl,
        total_fen=sum(x.amount_fen for x in sl),
        weighed_at=when,
        settled_at=when,
    )


def trade(
    *,
    seller: str,
    buyer: str,
    category: str,
    qty_t: str,
    price_fen_per_t: int,
    on: date,
    city_code: str = "110105",
    delivered_t: str | None = None,
    trade_id: str | None = None,
) -> tuple[TradeAwarded, TradeSettled]:
    tid = trade_id or f"tr_{next(_seq):08d}"
    common = dict(
        trade_id=tid,
        lot_id=f"lot_{tid}",
        seller_firm_id=seller,
        buyer_firm_id=buyer,
        category=category,
        grade="A",
        city_code=city_code,
        related_party=False,
    )
    delivered = delivered_t or qty_t
    amount = int((Decimal(delivered) * price_fen_per_t).to_integral_value())
    return (
        TradeAwarded(**common, qty_t=qty_t, price_fen_per_t=price_fen_per_t, awarded_at=at(on, 9)),
        TradeSettled(
            **common,
            delivered_t=delivered,
            price_fen_per_t=price_fen_per_t,
            amount_fen=amount,
            fee_fen=amount // 100,
            settled_at=at(on, 15),
        ),
    )


def auth(
    settings: Settings, user_id: str, *roles: str, firm_roles: dict[str, list[str]] | None = None
) -> dict:
    fr = firm_roles or {}
    principal = Principal(user_id, frozenset(roles), frozenset(fr), Principal.firm_roles_from(fr))
    return {"Authorization": "Bearer " + issue_token(settings, principal)}


def regulator(settings: Settings) -> dict:
    return auth(settings, "u_regulator", "regulator", "resident")


def firm_owner(settings: Settings, firm_id: str) -> dict:
    return auth(settings, f"u_owner_{firm_id}", "firm", "resident", firm_roles={firm_id: ["owner"]})


def resident(settings: Settings, user_id: str) -> dict:
    return auth(settings, user_id, "resident")
