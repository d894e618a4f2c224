"""Gateway-only middlewares (rate limits, idempotency, CORS, access log, metrics). Order matters: see the list."""
from __future__ import annotations

from aiohttp import web

from services.kernel.settings import Settings


def gateway_middlewares(settings: Settings) -> list:
    return []


def add_system_routes(app: web.Application) -> None:
    """/metrics and friends."""
