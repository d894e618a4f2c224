"""How the gateway serves the console: its own files and ECharts only, nothing remote, no file outside its folder."""

from __future__ import annotations

import json
import re

from gateway.console import STATIC, VENDOR
from tests.gateway.support import start

REMOTE = re.compile(r"""(src|href|import|from)\s*[=(]?\s*["'](https?:)?//""")


async def test_console_page_and_its_modules_are_served_with_a_strict_policy(
    aiohttp_client, sqlite_settings
) -> None:
    _, client = await start(aiohttp_client, sqlite_settings)
    r = await client.get("/console", allow_redirects=False)
    assert r.status == 308 and r.headers["Location"] == "/console/"
    r = await client.get("/console/")
    assert r.status == 200 and r.content_type == "text/html"
    assert '<html lang="zh-CN">' in await r.text()
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    r = await client.get("/console/pages/prices.js")
    assert (
        r.status == 200 and r.content_type == "text/javascript" and r.headers["Cache-Control"] == "no-cache"
    )
    r = await client.get("/console/vendor/echarts.esm.min.mjs")
    assert r.status == 200 and r.content_type == "text/javascript", (
        "make install puts ECharts in node_modules"
    )
    assert "Apache" in (await r.read())[:400].decode()


async def test_only_the_console_folder_and_the_named_vendor_file_are_reachable(
    aiohttp_client, sqlite_settings
) -> None:
    _, client = await start(aiohttp_client, sqlite_settings)
    for path in (
        "/console/../app.py",
        "/console/%2e%2e/__init__.py",
        "/console/..%2f__init__.py",
        "/console/vendor/..%2fpackage.json",
        "/console/vendor/echarts.js",
        "/console/package.json",
        "/console/nope.js",
    ):
        r = await client.get(path)
        assert r.status == 404, path
        assert r.content_type in ("application/problem+json", "text/plain"), path


async def test_the_region_picker_gets_the_kernel_division_table(aiohttp_client, sqlite_settings) -> None:
    _, client = await start(aiohttp_client, sqlite_settings)
    r = await client.get("/console/regions.json")
    rows = json.loads(await r.read())
    assert ["110000", "北京市"] in rows and ["110105", "朝阳区"] in rows
    assert all(len(code) == 6 and code.isdigit() for code, _ in rows)


def test_the_console_loads_nothing_from_elsewhere() -> None:
    """Works offline: no file of the console names a remote URL; its one library is vendored from npm."""
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "api.js", "console.css"}
    for p in files:
        assert not REMOTE.search(p.read_text(encoding="utf-8")), p
    assert set(VENDOR) == {"echarts.esm.min.mjs"}
