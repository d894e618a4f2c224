"""The docs stay true to the code: every route of the OpenAPI document is documented on its area's page, every
environment variable the code reads is in the generated configuration reference with its default, and the
architecture's service table names every topic each service publishes to and reads from; links between pages
resolve."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.app import SYSTEM_ROUTES, VERSION, all_routes
from gateway.openapi import build_openapi
from workers.settings_reference import reference_markdown, settings_classes

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


def test_generated_configuration_reference_is_current():
    current = (ROOT / "docs" / "configuration.md").read_text()
    assert current == reference_markdown() + "\n", (
        "run `make catalogue` (recycle settings-reference) and commit docs/configuration.md"
    )


# os.environ.get("X", ...), os.environ["X"], os.getenv("X"), and the supervisor's e.get("X", ...)
_READ = re.compile(r"""(?:environ\.get|environ\[|getenv|\be\.get)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")


def test_every_variable_read_directly_is_in_the_reference():
    reference = (ROOT / "docs" / "configuration.md").read_text()
    read = {
        (name, str(path.relative_to(ROOT)))
        for top in ("services", "gateway", "workers", "tests", "bench")
        for path in (ROOT / top).rglob("*.py")
        for name in _READ.findall(path.read_text())
    }
    assert read, "the pattern finds nothing: update it"
    missing = sorted(f"{name} ({path})" for name, path in read if f"`{name}`" not in reference)
    assert not missing, "add these to DIRECT in workers/settings_reference.py:\n" + "\n".join(missing)


def test_every_settings_class_is_in_the_reference():
    """A settings class in a service's `settings.py` is found without being listed (a new service's too)."""
    found = {cls.__name__ for _, cls in settings_classes()}
    for path in (ROOT / "services").glob("*/settings.py"):
        for name in re.findall(r"^class (\w+)\(StrictSettings\)", path.read_text(), re.M):
            assert name in found, f"{path.relative_to(ROOT)}: {name} is not in the configuration reference"


def _service_topics() -> dict[str, tuple[set[str], set[str]]]:
    """For each service: the topics of the events it builds (outside consumers.py) and of the contract classes its
    consumer groups map, read from its source."""
    import ast

    from services.kernel.events import load_event_modules, registry

    load_event_modules()
    topic_of = {cls.__name__: cls.topic for cls in registry().values()}
    found: dict[str, tuple[set[str], set[str]]] = {}
    for svc in sorted((ROOT / "services").iterdir()):
        if not (svc / "service.py").exists():
            continue
        publishes, consumes = set(), set()
        for path in svc.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if not isinstance(node, ast.Call):
                    continue
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else getattr(fn, "attr", None)
                if path.name == "consumers.py" and name == "group" and isinstance(node.args[1], ast.Dict):
                    for key in node.args[1].keys:
                        consumes.add(topic_of[key.id if isinstance(key, ast.Name) else key.attr])
                elif path.name != "consumers.py" and name in topic_of:
                    publishes.add(topic_of[name])
        found[svc.name] = (publishes, consumes)
    return found


def test_architecture_service_table_names_every_topic():
    """docs/architecture.md's service table: each service's row names every topic it publishes to and reads from."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\w+) \|.*$", text, re.M)}
    wrong = []
    for svc, (publishes, consumes) in _service_topics().items():
        row = rows.get(svc)
        if row is None:
            wrong.append(f"{svc}: no row")
            continue
        _, _, pub_cell, con_cell = (c.strip() for c in row.strip().strip("|").split("|"))
        wrong += [f"{svc} publishes to {t}" for t in sorted(publishes) if f"`{t}`" not in pub_cell]
        wrong += [f"{svc} consumes {t}" for t in sorted(consumes) if f"`{t}`" not in con_cell]
    assert not wrong, "docs/architecture.md's service table misses:\n" + "\n".join(wrong)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_docs_resolve():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for link in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = link.partition("#")
            target = (page.parent / path).resolve() if path else page
            if not target.exists():
                broken.append(f"{page.relative_to(ROOT)}: {link}")
            elif anchor and target.suffix == ".md":
                headings = {_slug(h) for h in re.findall(r"^#+ (.*)$", target.read_text(), re.M)}
                if anchor not in headings:
                    broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
