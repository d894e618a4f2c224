"""Process entry points: the gateway (embedded run) and one service per process (distributed run)."""

from __future__ import annotations

import logging

from aiohttp import web

from services.kernel.settings import ConfigError, Settings


def _logging(settings: Settings) -> None:
    from .logs import configure_logging

    configure_logging(settings)


def serve_gateway(settings: Settings, background: bool = True) -> None:
    _logging(settings)
    from gateway.app import create_app
    from services.bootstrap import Platform

    # Prepare (reach the databases and the bus, migrate, seed) before listening: bad configuration stops
    # start-up at once with a message that names what to fix.
    try:
        platform = None if settings.services == "none" else Platform(settings).prepare()
        app = create_app(settings, platform)
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    app["platform_prepared"] = True
    app["platform_no_background"] = not background
    print(
        f"Recycling marketplace listening on http://{settings.host}:{settings.port}  "
        f"(docs: http://{settings.host}:{settings.port}/docs)",
        flush=True,
    )
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)


def run_background(settings: Settings) -> None:
    """Relays and consumers of the hosted services until SIGTERM or Ctrl-C. Prepares first (idempotent: the
    embedded run starts this after the gateway has migrated)."""
    _logging(settings)
    import signal
    import threading

    from services.bootstrap import Platform

    try:
        platform = Platform(settings).prepare()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    platform.start()
    logging.getLogger(__name__).info("relays and consumers running for %s", ", ".join(platform.runtimes))
    print(f"Background: relays and consumers of {', '.join(platform.runtimes)}", flush=True)
    stop.wait()
    platform.stop()


def serve_one_service(settings: Settings, name: str, port: int) -> None:
    _logging(settings)
    from services.bootstrap import Platform
    from services.kernel.http import json_reply, service_app

    try:
        platform = Platform(settings, services=[name]).prepare()
    except ConfigError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    app = service_app(settings, [platform[name]])

    async def healthz(_: web.Request) -> web.Response:
        return json_reply({"status": "ok", "service": name})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", healthz)

    async def ctx(_app: web.Application):  # noqa: ANN202
        import asyncio

        loop = asyncio.get_running_loop()
        platform.start()
        yield
        await loop.run_in_executor(None, platform.stop)

    app.cleanup_ctx.append(ctx)
    logging.getLogger(__name__).info("service %s on port %d", name, port)
    web.run_app(app, host=settings.host, port=port, print=None, access_log=None)
