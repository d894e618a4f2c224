"""The printable certificate page: public, self-contained (no external assets), masked identifiers, and a QR code
that encodes exactly the page's address."""

from __future__ import annotations

import re

import segno

from .support import app_client, json_report, operator, register


def qr_modules(svg: str) -> set[tuple[int, int]]:
    """The dark modules (row, column) drawn by segno's inline SVG path (M/m moves, h runs), border included."""
    d = re.search(r'<path[^>]*class="qrline"[^>]*\sd="([^"]+)"', svg).group(1)  # not the light background
    x = y = 0.0
    dark: set[tuple[int, int]] = set()
    for cmd, args in re.findall(r"([Mmh])([-\d. ]+)", d):
        nums = [float(n) for n in args.split()]
        if cmd == "M":
            x, y = nums
        elif cmd == "m":
            x, y = x + nums[0], y + nums[1]
        else:
            dark |= {(int(y), int(x) + i) for i in range(int(nums[0]))}
            x += nums[0]
    return dark


def expected_modules(url: str, border: int = 4) -> set[tuple[int, int]]:
    matrix = segno.make(url, error="m").matrix
    return {(r + border, c + border) for r, row in enumerate(matrix) for c, v in enumerate(row) if v}


async def test_the_certificate_page_prints_with_a_qr_code_of_its_address(aiohttp_client, sqlite_settings):
    settings = sqlite_settings
    _, client = await app_client(aiohttp_client, settings, public_base_url="https://recycle.example.cn")
    tool = await register(client, settings)
    report = json_report(model="Mate 40 Pro")
    r = await client.post("/v1/wipe/reports", json=tool.submission(report), headers=operator(settings))
    cid = (await r.json())["certificate_id"]

    r = await client.get(f"/v1/wipe/certificates/{cid}/page")  # no token: public
    assert r.status == 200 and r.content_type == "text/html"
    html = await r.text()
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert cid in html and "Mate 40 Pro" in html and "有效 · VALID" in html and "密码擦除" in html
    for secret in (report["device"]["imei"], report["device"]["serial"], report["media"][0]["serial"]):
        assert secret not in html
    assert report["device"]["imei"][-4:] in html  # masked, not absent
    # nothing loaded from elsewhere: no scripts, stylesheets or images by URL
    assert not re.search(r"<script|<link|src=\"http|url\(", html)

    url = f"https://recycle.example.cn/v1/wipe/certificates/{cid}/page"
    svg = re.search(r"<svg.*?</svg>", html, re.S).group(0)
    assert qr_modules(svg) == expected_modules(url)
    other = cid[:-1] + ("1" if cid[-1] == "0" else "0")  # a different address draws a different code
    assert qr_modules(svg) != expected_modules(url.replace(cid, other))

    r = await client.get("/v1/wipe/certificates/wc_missing/page")
    assert r.status == 404 and r.content_type == "application/problem+json"


async def test_without_a_configured_address_the_qr_code_names_the_one_the_client_used(
    aiohttp_client, sqlite_settings
):
    settings = sqlite_settings
    _, client = await app_client(aiohttp_client, settings)
    tool = await register(client, settings)
    r = await client.post("/v1/wipe/reports", json=tool.submission(json_report()), headers=operator(settings))
    cid = (await r.json())["certificate_id"]
    # what the distributed gateway forwards (the service itself sits at an internal address)
    r = await client.get(
        f"/v1/wipe/certificates/{cid}/page",
        headers={"X-Forwarded-Host": "wipe.example.cn", "X-Forwarded-Proto": "https"},
    )
    svg = re.search(r"<svg.*?</svg>", await r.text(), re.S).group(0)
    assert qr_modules(svg) == expected_modules(f"https://wipe.example.cn/v1/wipe/certificates/{cid}/page")
