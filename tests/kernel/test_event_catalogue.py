"""Every event type is registered, travels on a declared topic, and is documented in the generated catalogue."""

from __future__ import annotations

from pathlib import Path

from services.kernel.bus.factory import declared_topics
from services.kernel.events import Envelope, catalogue_markdown, load_event_modules, registry

ROOT = Path(__file__).resolve().parents[2]


def _load_all() -> None:
    load_event_modules()


def test_every_event_topic_is_declared():
    _load_all()
    topics = {t.name for t in declared_topics()}
    missing = {cls.type: cls.topic for cls in registry().values() if cls.topic not in topics}
    assert not missing, f"declare these topics in infra/kafka/topics.toml: {missing}"


def test_event_types_are_versioned_and_keyed():
    _load_all()
    for t, cls in registry().items():
        assert t.startswith("cn.recycle.") and t.rsplit(".", 1)[-1].startswith("v"), t
        assert cls.key_field in cls.model_fields, f"{t}: key field {cls.key_field} is not a field"


def test_generated_catalogue_is_current():
    _load_all()
    current = (ROOT / "docs" / "events.md").read_text()
    assert current == catalogue_markdown() + "\n", (
        "run `make catalogue` (recycle events-catalogue) and commit"
    )


def test_catalogue_describes_nested_models_and_formats():
    """A field typed by a nested model (a pickup's lines) is described field by field, and a moment is a date-time."""
    _load_all()
    text = catalogue_markdown()
    nested = {n for cls in registry().values() for n in cls.model_json_schema().get("$defs", {})}
    assert nested, "no event has a nested model any more: drop this test's first half"
    for name in nested:
        assert f"`{name}`:\n\n| field | type | required |" in text, name
    assert "| `settled_at` | string (date-time) | yes |" in text


def test_envelope_is_cloudevents_structured_json():
    from datetime import UTC, date, datetime

    from services.contracts.pricing import IndexPublished

    ev = IndexPublished(
        series_key="metal.steel@000000",
        code="metal.steel",
        kind="price",
        region="000000",
        date=date(2026, 11, 1),
        value="200",
        unit_price_fen=200,
        methodology_version="x",
        published_at=datetime.now(UTC),
    )
    env = Envelope.wrap(ev, trace_id="tr_1")
    import json

    body = json.loads(env.to_bytes())
    for attr in ("id", "source", "type", "specversion", "time", "subject", "datacontenttype", "data"):
        assert attr in body
    assert body["specversion"] == "1.0" and body["subject"] == "metal.steel@000000"
    assert Envelope.from_bytes(env.to_bytes()).event() == ev
