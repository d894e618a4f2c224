"""Helpers for trading tests: the platform (trading alone, other services' events published straight onto the real
bus), verified firms, settled intake, tokens, lots."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.accounts import FirmVerified, RolesChanged
from services.contracts.booking import PickupSettled, SettledLine
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.settings import Settings
from services.trading.settings import configure

CITY = "110105"
STEEL_TAX_CODE = "1080103010000000000"
_seq = itertools.count(1)
TRADING_ONLY = ["trading"]


def platform_for(settings: Settings, services: list[str] | None = None, **trading: Any) -> Platform:
    platform = Platform(settings, services=services or TRADING_ONLY).prepare()
    configure(platform["trading"], **trading)
    return platform


async def app_client(aiohttp_client, settings: Settings, services: list[str] | None = None, **trading: Any):
    platform = platform_for(settings, services, **trading)
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def publish(platform: Platform, *events: Event | Envelope, drain: bool = True) -> list[Envelope]:
    """Publish events as their services would (straight onto the bus); then let every consumer catch up."""
    envs = [e if isinstance(e, Envelope) else Envelope.wrap(e) for e in events]
    platform.bus.publish(
        [Record(topic=topic_of(env.type), key=env.subject, value=env.to_bytes()) for env in envs]
    )
    if drain:
        platform.drain()
    return envs


def firm_events(
    firm_id: str, owner: str | None = None, *, also_acts_for: tuple[str, ...] = ()
) -> list[Event]:
    """Accounts verified `firm_id`; its owner acts for it (and for `also_acts_for`: related firms)."""
    owner = owner or owner_of(firm_id)
    now = datetime(2026, 1, 5, tzinfo=UTC)
    return [
        FirmVerified(
            firm_id=firm_id,
            owner_user_id=owner,
            name=f"{firm_id} 再生资源有限公司",
            uscc="91110105MA01ABCD1X",
            address="北京市朝阳区建国路1号",
            city_code=CITY,
            verified_at=now,
        ),
        RolesChanged(user_id=owner, roles=["firm", "resident"], firm_ids=sorted({firm_id, *also_acts_for})),
    ]


def owner_of(firm_id: str) -> str:
    return f"u_owner_{firm_id}"


def settled_intake(
    firm_id: str,
    kg: str,
    *,
    category: str = "metal.steel",
    when: datetime | None = None,
    pickup_id: str | None = None,
) -> PickupSettled:
    when = when or datetime.now(UTC) - timedelta(days=1)
    qty = f"{kg}" if "." in kg else f"{kg}.000"
    line = SettledLine(
        category=category,
        tax_code=STEEL_TAX_CODE,
        unit="kg",
        qty=qty,
        unit_price_fen=2,
        amount_fen=int(float(qty) * 2),
    )
    return PickupSettled(
        pickup_id=pickup_id or f"pk_{next(_seq):08d}",
        resident_id="u_resident",
        collector_id="cl_1",
        collector_user_id="u_collector",
        firm_id=firm_id,
        city_code=CITY,
        lines=[line],
        total_fen=line.amount_fen,
        weighed_at=when,
        settled_at=when,
    )


def firm_auth(settings: Settings, firm_id: str, user_id: str | None = None) -> dict[str, str]:
    user_id = user_id or owner_of(firm_id)
    principal = Principal(user_id, frozenset({"firm"}), frozenset({firm_id}), frozenset({(firm_id, "owner")}))
    return {"Authorization": "Bearer " + issue_token(settings, principal)}


def firm_principal(firm_id: str) -> Principal:
    return Principal(
        owner_of(firm_id), frozenset({"firm"}), frozenset({firm_id}), frozenset({(firm_id, "owner")})
    )


def admin_auth(settings: Settings, user_id: str = "u_admin") -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(settings, Principal(user_id, frozenset({"admin"})))}


def lot_body(**over: Any) -> dict[str, Any]:
    body = dict(
        category="metal.steel",
        grade="重废 HMS1",
        qty_t="20.000",
        city_code=CITY,
        reserve_price_fen_per_t=250_000,
        auction="ascending",
        ends_at=(datetime.now(UTC) + timedelta(hours=1)).isoformat(),
        min_increment_fen_per_t=1_000,
    )
    body.update(over)
    return body
