"""The web console (管理与数据看板) at /console/: static ES modules and ECharts, served by the gateway.

The console has no server side of its own: the page logs in with phone + code through the public API and sends
the bearer token itself, so roles and ownership are exactly the API's. Every asset comes from this process
(no CDN): our files from `static/`, ECharts from the npm package that `make install` puts in `node_modules/`
(pinned in package-lock.json). The region picker's table is the kernel's division table, as JSON.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from aiohttp import web

from services.kernel.errors import NotFound
from services.kernel.http import problem_for, problem_reply

HERE = Path(__file__).parent
STATIC = HERE / "static"
NODE_MODULES = HERE / "node_modules"
# The only files taken from node_modules: the name the page imports → the file npm installed.
VENDOR = {"echarts.esm.min.mjs": NODE_MODULES / "echarts" / "dist" / "echarts.esm.min.mjs"}

TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
}

# The console loads only its own files and calls only its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def install(app: web.Application) -> None:
    app.router.add_get("/console", _to_console)
    app.router.add_get("/console/", index)
    app.router.add_get("/console/regions.json", regions)
    app.router.add_get("/console/vendor/{name}", vendor)
    app.router.add_get("/console/{path:.+}", asset)


async def _to_console(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/console/")


async def index(request: web.Request) -> web.StreamResponse:
    return _file(STATIC / "index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    path = (STATIC / rel).resolve()
    if not path.is_relative_to(STATIC.resolve()) or not path.is_file() or path.suffix not in TYPES:
        raise NotFound(f"no console file {rel}")
    return _file(path)


async def vendor(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = VENDOR.get(name)
    if path is None:
        raise NotFound(f"no vendored file {name}")
    if not path.is_file():
        return problem_reply(
            problem_for(
                503,
                f"{name} is not installed: run `make install` (npm ci in gateway/console)",
                instance=request.path,
            )
        )
    return _file(path, immutable=True)


async def regions(request: web.Request) -> web.Response:
    return web.Response(
        body=_regions_json(),
        content_type="application/json",
        headers={**SECURITY_HEADERS, "Cache-Control": "public, max-age=86400"},
    )


@functools.lru_cache(maxsize=1)
def _regions_json() -> bytes:
    """[[code, name], ...] of every province, city and county (the picker cascades province → below)."""
    from services.kernel.regions import all_regions

    return json.dumps(
        [[r.code, r.name] for r in all_regions()], ensure_ascii=False, separators=(",", ":")
    ).encode()


def _file(path: Path, immutable: bool = False) -> web.FileResponse:
    # Vendored files change only with package-lock.json (new name, new version); ours are revalidated.
    cache = "public, max-age=604800" if immutable else "no-cache"
    ctype = TYPES[path.suffix]
    return web.FileResponse(
        path,
        headers={
            **SECURITY_HEADERS,
            "Cache-Control": cache,
            "Content-Type": f"{ctype}; charset=utf-8" if ctype.startswith("text/") else ctype,
        },
    )
