"""The docs stay true to the code: every route of the OpenAPI document is documented on its area's page."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import SYSTEM_ROUTES, VERSION, all_routes
from gateway.openapi import build_openapi

ROOT = Path(__file__).resolve().parents[1]

# the page that documents each OpenAPI tag (a service, or the gateway's own routes)
AREA_PAGE = {
    "accounts": "docs/accounts.md",
    "booking": "docs/booking.md",
    "invoicing": "docs/invoicing.md",
    "listings": "docs/listings.md",
    "payments": "docs/payments.md",
    "pricing": "docs/pricing.md",
    "stats": "docs/stats.md",
    "trading": "docs/trading.md",
    "wipe": "docs/wipe.md",
    "system": "docs/reliability.md",
    "admin": "docs/reliability.md",
}


def _mention(method: str, path: str) -> re.Pattern[str]:
    """`METHOD /path` as a page writes it (or `METHOD $API/path`): a path parameter as `{name}`, `$VAR` or a
    literal id."""
    parts = re.split(r"(\{[^}]+\})", path)
    body = "".join(r"(\{[^}]+\}|\$\{?\w+\}?|[\w-]+)" if p.startswith("{") else re.escape(p) for p in parts)
    return re.compile(re.escape(method) + r"`?\s+`?(\$API)?" + body + r"(?![\w/-])")


def test_every_route_is_documented_on_its_area_page():
    doc = build_openapi(all_routes(), SYSTEM_ROUTES, "t", VERSION)
    missing = []
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            tag = op["tags"][0]
            page = AREA_PAGE.get(tag)
            assert page is not None, f"{method.upper()} {path}: no docs page for the tag {tag!r} (AREA_PAGE)"
            if not _mention(method.upper(), path).search((ROOT / page).read_text()):
                missing.append(f"{method.upper()} {path} → {page}")
    assert not missing, "document these routes on their area's page:\n" + "\n".join(missing)


def test_the_mention_pattern():
    rx = _mention("POST", "/v1/lots/{id}/bids")
    assert rx.search("`POST /v1/lots/{id}/bids {price}`") and rx.search("POST $API/v1/lots/$LOT/bids")
    assert not rx.search("GET /v1/lots/{id}/bids") and not rx.search("POST /v1/lots/{id}/bids/x")
