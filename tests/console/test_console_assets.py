"""How the gateway serves the console: its own files and ECharts only, nothing remote, no file outside its folder.

Plain HTTP against the package's running platform (sync: Playwright's sync API owns the event loop while the
package's browser is open)."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urlsplit

from gateway.console import STATIC, VENDOR


def get(platform, path: str) -> http.client.HTTPResponse:
    """GET `path` exactly as written (no client-side normalisation of `..`)."""
    u = urlsplit(platform["base"])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", path)
    r = conn.getresponse()
    r.body = r.read()
    conn.close()
    return r


REMOTE = re.compile(r"""(src|href|import|from)\s*[=(]?\s*["'](https?:)?//""")


def test_console_page_and_its_modules_are_served_with_a_strict_policy(platform) -> None:
    r = get(platform, "/console")
    assert r.status == 308 and r.headers["Location"] == "/console/"
    r = get(platform, "/console/")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")
    assert '<html lang="zh-CN">' in r.body.decode()
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    r = get(platform, "/console/pages/prices.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    assert r.headers["Cache-Control"] == "no-cache"
    r = get(platform, "/console/vendor/echarts.esm.min.mjs")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript"), (
        "make install runs npm ci"
    )
    assert "Apache" in r.body[:400].decode()


def test_only_the_console_folder_and_the_named_vendor_file_are_reachable(platform) -> None:
    for path in (
        "/console/../gateway/app.py",
        "/console/%2e%2e/__init__.py",
        "/console/..%2f__init__.py",
        "/console/vendor/..%2fpackage.json",
        "/console/vendor/echarts.js",
        "/console/package.json",
        "/console/package-lock.json",
        "/console/nope.js",
    ):
        r = get(platform, path)
        assert r.status == 404, path
        assert b"__future__" not in r.body and b"dependencies" not in r.body, path


def test_the_region_picker_gets_the_kernel_division_table(platform) -> None:
    rows = json.loads(get(platform, "/console/regions.json").body)
    assert ["110000", "北京市"] in rows and ["110105", "朝阳区"] in rows
    assert all(len(code) == 6 and code.isdigit() for code, _ in rows)


def test_the_console_loads_nothing_from_elsewhere() -> None:
    """Works offline: no file of the console names a remote URL; its one library is vendored from npm."""
    files = [p for p in STATIC.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"index.html", "app.js", "api.js", "console.css"}
    for p in files:
        assert not REMOTE.search(p.read_text(encoding="utf-8")), p
    assert set(VENDOR) == {"echarts.esm.min.mjs"}
