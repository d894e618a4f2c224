"""Helpers for the wipe service tests: the platform (wipe alone), Ed25519 tool keys, signed reports, tokens, the
events that reached the bus."""

from __future__ import annotations

import base64
import copy
import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.app import create_app_over
from services.bootstrap import Platform
from services.kernel.auth import Principal, issue_token
from services.kernel.checkdigits import luhn_check_digit
from services.kernel.events import Envelope
from services.kernel.settings import Settings
from services.wipe.domain.policy import WipePolicy, default_policy
from services.wipe.settings import configure

DATA = Path(__file__).parent / "data"
_seq = itertools.count(1)


def platform_for(
    settings: Settings, services: list[str] | None = None, *, policy: WipePolicy | None = None, **wipe: Any
) -> Platform:
    platform = Platform(settings, services=services or ["wipe"]).prepare()
    configure(platform["wipe"], policy=policy, **wipe)
    return platform


async def app_client(
    aiohttp_client,
    settings: Settings,
    services: list[str] | None = None,  # noqa: ANN001
    *,
    policy: WipePolicy | None = None,
    **wipe: Any,
):
    platform = platform_for(settings, services, policy=policy, **wipe)
    app = create_app_over(platform)
    return platform, await aiohttp_client(app)


def policy_with(**changes: Any) -> WipePolicy:
    """The shipped policy with some sections changed, e.g. policy_with(secondary={"share": 1.0})."""
    data = default_policy().model_dump()
    for section, values in changes.items():
        data[section] = data[section] | values if isinstance(values, dict) else values
    return WipePolicy.model_validate(data)


# --- keys and signatures -------------------------------------------------------------------------------------


class Tool:
    """An erasure tool's key pair."""

    def __init__(self) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.id: str | None = None

    @property
    def public_b64(self) -> str:
        return base64.b64encode(self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    def sign(self, report: str) -> str:
        return base64.b64encode(self.key.sign(report.encode("utf-8"))).decode()

    def submission(self, report: str | dict, fmt: str = "json") -> dict[str, str]:
        text = report if isinstance(report, str) else json.dumps(report, ensure_ascii=False)
        assert self.id, "register the tool first"
        return {"tool_id": self.id, "format": fmt, "report": text, "signature": self.sign(text)}


def imei(n: int | None = None) -> str:
    body = f"86{(n if n is not None else next(_seq)) % 10**12:012d}"
    return body + luhn_check_digit(body)


def json_report(
    *, kind: str = "phone", media: list[dict] | None = None, created_at: datetime | None = None, **device: Any
) -> dict[str, Any]:
    """A report that passes the shipped policy: a Huawei phone, UFS crypto-erased, fully verified."""
    n = next(_seq)
    dev = {
        "kind": kind,
        "make": "Huawei",
        "model": "Mate 40",
        "imei": imei(n),
        "serial": f"SN{n:08d}",
    } | device
    return {
        "schema": "wipe-report/1",
        "report_id": f"rep-{n}",
        "created_at": (created_at or datetime.now(UTC) - timedelta(hours=1)).isoformat(),
        "device": {k: v for k, v in dev.items() if v is not None},
        "activation_lock": "off",
        "media": media if media is not None else [medium()],
    }


def medium(**changes: Any) -> dict[str, Any]:
    n = next(_seq)
    m = {
        "type": "ufs",
        "serial": f"UFS{n:08d}",
        "capacity_bytes": 128_000_000_000,
        "bytes_erased": 128_000_000_000,
        "hidden_areas": "not_supported",
        "method": "crypto_erase",
        "passes": 1,
        "random_passes": 0,
        "erase_result": "passed",
        "verification": {
            "mode": "full",
            "subsections": None,
            "locations_per_subsection": None,
            "coverage_pct": 100.0,
            "result": "passed",
        },
    }
    return m | changes


def changed(report: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A deep copy of `report` with the dotted `path` (e.g. "media.0.method") set to `value`."""
    out = copy.deepcopy(report)
    node: Any = out
    *parts, last = path.split(".")
    for p in parts:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


def nwipe_log(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# --- tokens -----------------------------------------------------------------------------------------------


def auth(settings: Settings, user_id: str, *roles: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + issue_token(settings, Principal(user_id, frozenset(roles)))}


def admin(settings: Settings) -> dict[str, str]:
    return auth(settings, "us_admin", "admin")


def operator(settings: Settings, user_id: str = "us_operator") -> dict[str, str]:
    return auth(settings, user_id, "erasure_operator")


async def register(client, settings: Settings, tool: Tool | None = None, name: str = "擦除站 A") -> Tool:  # noqa: ANN001
    tool = tool or Tool()
    r = await client.post(
        "/v1/wipe/tools", json={"name": name, "public_key": tool.public_b64}, headers=admin(settings)
    )
    assert r.status == 201, await r.text()
    tool.id = (await r.json())["id"]
    return tool


# --- the bus ------------------------------------------------------------------------------------------------


def published(platform: Platform, topic: str = "wipe.certificate") -> list[Envelope]:
    """Every event on `topic` (all partitions), after relaying the outboxes."""
    platform.drain()
    out: list[Envelope] = []
    for partition, end in platform.bus.end_offsets(topic).items():
        offset = 0
        while offset < end:
            records = platform.bus.read(topic, partition, offset)
            if not records:
                break
            out += [Envelope.from_bytes(r.value) for r in records]
            offset += len(records)
    return sorted(out, key=lambda e: e.time)
