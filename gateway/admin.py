"""Dead letters over HTTP for admins (the console's operations page): what each consumer group parked, and replay.

The same functions as `recycle dead-letters list|replay` (services.kernel.consumer), reached through the gateway's
auth. The groups are the consumers of the services this gateway hosts (the embedded run: all of them); in the
distributed run the gateway hosts none, so these routes answer 503 there and the CLI on a service host is the tool.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from services.kernel.consumer import dlq_topic, list_dead_letters, replay_dead_letters, replayed_dead_letters
from services.kernel.errors import Forbidden, NotFound, Unauthorized, ValidationFailed
from services.kernel.http import authenticate, json_reply, problem_for, problem_reply

LIST_LIMIT = 500  # records shown per group; replay covers every parked record


class ReplayIn(BaseModel):
    model_config = {"extra": "forbid"}
    only: list[str] | None = Field(
        None, max_length=1000, description='"partition@offset" of the records to replay'
    )


def install(app: web.Application) -> None:
    app.router.add_get("/v1/admin/dead-letters", groups)
    app.router.add_get("/v1/admin/dead-letters/{group}", records)
    app.router.add_post("/v1/admin/dead-letters/{group}/replay", replay)


async def _admin(request: web.Request) -> None:
    principal = await authenticate(request)
    if principal is None:
        raise Unauthorized("sign in as an admin", reason="token_missing")
    if not principal.has("admin"):
        raise Forbidden("needs one of the roles ['admin']", reason="role_required")


def _platform_groups(request: web.Request) -> tuple[Any, list[str]] | web.Response:
    platform = request.app.get("platform")
    if platform is None:
        return problem_reply(
            problem_for(
                503,
                "this gateway hosts no service: use `recycle dead-letters` on a service host",
                instance=request.path,
            )
        )
    return platform.bus, sorted(g for rt in platform.runtimes.values() for g in rt.consumer_groups())


async def _run(fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


def _view(r: Any) -> dict[str, Any]:
    h = r.headers
    return {
        "id": f"{r.partition}@{r.offset}",
        "key": r.key,
        "type": h.get("ce_type"),
        "original": f"{h.get('dlq.original_topic')}/{h.get('dlq.original_partition')}@{h.get('dlq.original_offset')}",
        "attempts": int(h.get("dlq.attempts", "0") or 0),
        "error": h.get("dlq.error", ""),
        "replayed_from": h.get("replayed_from"),
        "parked_at_ms": r.timestamp_ms,
    }


async def groups(request: web.Request) -> web.Response:
    """Every consumer group with the number of records it parked."""
    await _admin(request)
    found = _platform_groups(request)
    if isinstance(found, web.Response):
        return found
    bus, names = found

    def count() -> list[dict[str, Any]]:
        return [
            {"group": g, "parked": parked_count(bus, g), "replayed": len(replayed_dead_letters(bus, g))}
            for g in names
        ]

    return json_reply({"items": await _run(count)})


def _group(request: web.Request, names: list[str]) -> str:
    group = request.match_info["group"]
    if group not in names:
        raise NotFound(f"no consumer group {group}")
    return group


async def records(request: web.Request) -> web.Response:
    """The records a group parked (oldest first), with the error and the number of attempts."""
    await _admin(request)
    found = _platform_groups(request)
    if isinstance(found, web.Response):
        return found
    bus, names = found
    group = _group(request, names)
    parked = await _run(lambda: list_dead_letters(bus, group, limit=LIST_LIMIT))
    return json_reply({"group": group, "items": [_view(r) for r in parked]})


async def replay(request: web.Request) -> web.Response:
    """Send a group's parked records (all, or `only` these) back to their topic; the inbox makes it harmless."""
    await _admin(request)
    found = _platform_groups(request)
    if isinstance(found, web.Response):
        return found
    bus, names = found
    group = _group(request, names)
    raw = await request.read()
    try:
        body = ReplayIn.model_validate(json.loads(raw) if raw.strip() else {})
        offsets = None if body.only is None else {_offset(x) for x in body.only}
    except (ValueError, ValidationError) as exc:
        raise ValidationFailed.field("only", f'a list of "partition@offset": {exc}') from exc
    n = await _run(replay_dead_letters, bus, group, offsets)
    return json_reply({"group": group, "replayed": n})


def _offset(text: str) -> tuple[int, int]:
    p, _, o = text.partition("@")
    return int(p), int(o)


def parked_count(bus: Any, group: str) -> int:
    """Records ever parked by `group` (the dead-letter topic's length: end offsets, no records read)."""
    return sum(bus.end_offsets(dlq_topic(group)).values())


class ParkedCollector:
    """/metrics: records parked per consumer group (and how many were replayed), outbox rows parked per service.
    Read at each scrape from the bus's end offsets and the outboxes (cheap queries)."""

    def __init__(self, platform: Any):
        self.platform = platform

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        parked = GaugeMetricFamily(
            "recycle_dead_letters_parked", "records parked in dlq.<group>", labels=["group"]
        )
        replayed = GaugeMetricFamily(
            "recycle_dead_letters_replayed", "parked records sent back by a replay", labels=["group"]
        )
        outbox = GaugeMetricFamily(
            "recycle_outbox_parked",
            "outbox rows the relay gave up on (see recycle outbox)",
            labels=["service"],
        )
        for rt in self.platform.runtimes.values():
            for g in rt.consumer_groups():
                try:
                    parked.add_metric([g], parked_count(self.platform.bus, g))
                    replayed.add_metric([g], len(replayed_dead_letters(self.platform.bus, g)))
                except Exception:  # noqa: BLE001, S112 - the bus is down: /readyz says so; leave the series out
                    continue
            try:
                outbox.add_metric([rt.name], len(rt.relay.parked()))
            except Exception:  # noqa: BLE001, S112 - the database is down
                continue
        yield from (parked, replayed, outbox)
