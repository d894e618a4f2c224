"""Helpers for the invoicing service tests: the platform (invoicing alone, other services' events published
straight onto the real bus), facts from accounts, settled pickups, tokens."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.contracts.accounts import (
    AccountantAdded,
    ConsentRecorded,
    FirmVerified,
    IdentityVerified,
    QualificationApproved,
)
from services.contracts.booking import PickupSettled, SettledLine
from services.invoicing.settings import configure
from services.kernel.auth import Principal, issue_token
from services.kernel.bus.port import Record
from services.kernel.events import Envelope, Event, topic_of
from services.kernel.pii import encrypt, mask_id, mask_name
from services.kernel.settings import Settings

SHANGHAI = ZoneInfo("Asia/Shanghai")
STEEL_TAX_CODE = "1080103010000000000"
_seq = itertools.count(1)

INVOICING_ONLY = ["invoicing"]


def platform_for(settings: Settings, **invoicing: Any) -> Platform:
    platform = Platform(settings, services=INVOICING_ONLY).prepare()
    configure(platform["invoicing"], **invoicing)
    return platform


async def app_client(aiohttp_client, settings: Settings, **invoicing: Any):  # noqa: ANN001
    platform = platform_for(settings, **invoicing)
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


def at(day: date, hour: int = 10) -> datetime:
    """`day` at `hour` o'clock in China, as UTC."""
    return datetime.combine(day, time(hour), tzinfo=SHANGHAI).astimezone(UTC)


# ---------------------------------------------------------------------------------------------------- facts


def issuer_events(
    firm_id: str,
    *,
    city_code: str = "110105",
    valid_until: date = date(2030, 12, 31),
    kind: str = "recycler_filing",
    qualified: bool = True,
) -> list[Event]:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    events: list[Event] = [
        FirmVerified(
            firm_id=firm_id,
            owner_user_id=f"owner_{firm_id}",
            name=f"{firm_id} 再生资源回收有限公司",
            uscc="91110105MA01ABCD1X",
            address="北京市朝阳区建国路1号",
            city_code=city_code,
            verified_at=now,
        )
    ]
    if qualified:
        events.append(
            QualificationApproved(
                firm_id=firm_id,
                qualification_id=f"q_{firm_id}_{kind}",
                kind=kind,
                number=f"京商备{next(_seq):06d}",
                valid_until=valid_until,
                approved_at=now,
            )
        )
    return events


def seller_events(
    settings: Settings,
    user_id: str,
    *,
    verified: bool = True,
    consent: bool = True,
    name: str = "张三",
    id_number: str = "11010519491231002X",
) -> list[Event]:
    now = datetime(2024, 5, 1, tzinfo=UTC)
    events: list[Event] = []
    if verified:
        events.append(
            IdentityVerified(
                user_id=user_id,
                real_name_enc=encrypt(settings, name),
                id_number_enc=encrypt(settings, id_number),
                name_masked=mask_name(name),
                id_number_masked=mask_id(id_number),
                verified_at=now,
            )
        )
    if consent:
        events.append(
            ConsentRecorded(
                user_id=user_id, consent_id=f"cs_{user_id}", kind="reverse_invoicing", recorded_at=now
            )
        )
    return events


def accountant_added(firm_id: str, user_id: str) -> AccountantAdded:
    return AccountantAdded(firm_id=firm_id, user_id=user_id, added_at=datetime(2024, 5, 1, tzinfo=UTC))


def settled(
    seller_id: str,
    firm_id: str,
    amounts_fen: list[int] | int,
    *,
    on: date,
    hour: int = 10,
    pickup_id: str | None = None,
    extra_lines: list[SettledLine] | None = None,
) -> PickupSettled:
    """A settled pickup of steel: one line per amount, 1,000 kg each (unit price = amount / 1000)."""
    amounts = amounts_fen if isinstance(amounts_fen, list) else [amounts_fen]
    lines = [
        SettledLine(
            category="metal.steel",
            tax_code=STEEL_TAX_CODE,
            unit="kg",
            qty="1000.000",
            unit_price_fen=a // 1000,
            amount_fen=a,
        )
        for a in amounts
    ] + list(extra_lines or [])
    when = at(on, hour)
    return PickupSettled(
        pickup_id=pickup_id or f"pk_{next(_seq):08d}",
        resident_id=seller_id,
        collector_id="cl_1",
        collector_user_id="u_collector",
        firm_id=firm_id,
        city_code="110105",
        lines=lines,
        total_fen=sum(ln.amount_fen for ln in lines),
        weighed_at=when,
        settled_at=when,
    )


# ---------------------------------------------------------------------------------------------------- tokens


def token(
    settings: Settings,
    user_id: str,
    *roles: str,
    firms: tuple[str, ...] = (),
    firm_roles: dict[str, list[str]] | None = None,
) -> str:
    return issue_token(
        settings,
        Principal(
            user_id,
            frozenset(roles),
            frozenset(firms) | set(firm_roles or {}),
            Principal.firm_roles_from(firm_roles or {}),
        ),
    )


def auth(
    settings: Settings,
    user_id: str,
    *roles: str,
    firms: tuple[str, ...] = (),
    firm_roles: dict[str, list[str]] | None = None,
) -> dict[str, str]:
    return {"Authorization": "Bearer " + token(settings, user_id, *roles, firms=firms, firm_roles=firm_roles)}


def accountant(settings: Settings, firm_id: str, user_id: str = "u_accountant") -> dict[str, str]:
    return auth(settings, user_id, "accountant", firms=(firm_id,))
