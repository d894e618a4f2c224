"""Integration events: one typed model per event, carried in a CloudEvents 1.0 envelope.

An event class names its `type` (versioned), its `topic` (one per aggregate family) and which field is the
aggregate id (the partition key: per-key order holds). Every subclass registers itself, which is what the
decoder and the generated event catalogue read.
"""

from __future__ import annotations

import builtins
import contextvars
import json
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from .ids import new_id

SPECVERSION = "1.0"
CONTENT_TYPE = "application/cloudevents+json"

# The trace id of the request (or event) being handled; new events inherit it.
current_trace_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_id", default=None)
# The id of the event a consumer is handling (set by the consumer runner around each handler call), for handlers
# that keep it as provenance.
current_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("event_id", default=None)

_REGISTRY: dict[str, type[Event]] = {}
E = TypeVar("E", bound="Event")


class Event(BaseModel):
    """Base for every integration event's data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ClassVar[str]
    topic: ClassVar[str]
    key_field: ClassVar[str]
    source: ClassVar[str]
    # one line for the catalogue: who publishes it, and why
    doc: ClassVar[str] = ""

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if "type" in cls.__dict__:
            if cls.type in _REGISTRY and _REGISTRY[cls.type].__qualname__ != cls.__qualname__:
                raise TypeError(f"event type {cls.type} registered twice")
            _REGISTRY[cls.type] = cls

    @property
    def key(self) -> str:
        return str(getattr(self, self.key_field))

    @classmethod
    def decode(cls: builtins.type[E], data: dict[str, Any]) -> E:  # `type` is the event's type string here
        """Tolerant reader: fields this version does not know are ignored, so a publisher may add optional
        fields without breaking its consumers (building an event stays strict: `extra="forbid"`)."""
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})


class Envelope(BaseModel):
    """CloudEvents 1.0 structured-mode envelope plus a `traceid` extension attribute."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(default_factory=lambda: new_id("ev"))
    source: str
    type: str
    specversion: str = SPECVERSION
    time: datetime = Field(default_factory=lambda: datetime.now(UTC))
    subject: str
    datacontenttype: str = "application/json"
    traceid: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(cls, event: Event, trace_id: str | None = None, event_id: str | None = None) -> Envelope:
        """`event_id`: an id derived from what the event reports (e.g. a payout's outcome), for an event its
        publisher may announce again (`outbox.publish_again`): consumers' inboxes then take the copy for the one
        they may have handled already. Else a new id."""
        return cls(
            **({"id": event_id} if event_id else {}),
            source=event.source,
            type=event.type,
            subject=event.key,
            traceid=trace_id or current_trace_id.get() or new_id("tr"),
            data=event.model_dump(mode="json"),
        )

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        return cls.model_validate_json(raw)

    def event(self) -> Event:
        """The typed event (raises KeyError for a type this process does not know)."""
        return _REGISTRY[self.type].decode(self.data)


def load_event_modules() -> None:
    """Import every published contract (`services/contracts/*.py`) and every service's `domain/events.py`, so the
    registry knows every event type."""
    import importlib
    import pkgutil
    from pathlib import Path

    # found on disk, not imported by name: the kernel depends on no service and no contract
    services_dir = Path(__file__).resolve().parents[1]
    for mod in pkgutil.iter_modules([str(services_dir / "contracts")]):
        importlib.import_module(f"services.contracts.{mod.name}")

    for mod in pkgutil.iter_modules([str(services_dir)]):
        try:
            importlib.import_module(f"services.{mod.name}.domain.events")
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith(f"services.{mod.name}"):
                raise


def registry() -> dict[str, type[Event]]:
    return dict(_REGISTRY)


def topic_of(event_type: str) -> str:
    return _REGISTRY[event_type].topic


def catalogue_markdown() -> str:
    """The event catalogue, generated from the event models (docs/events.md)."""
    lines = [
        "# Event catalogue",
        "",
        "Generated by `recycle events-catalogue` from the event models; do not edit by hand.",
        "Every event travels as a CloudEvents 1.0 structured JSON envelope (`id`, `source`, `type`, `specversion`,",
        "`time`, `subject`, `datacontenttype`, `traceid`, `data`); the Kafka key is `subject` (the aggregate id).",
        "Record headers: `content-type`, `ce_id` (the event id) and `ce_type` (the type), so a consumer can skip a",
        "type it does not handle without decoding the record.",
        "",
    ]
    by_topic: dict[str, list[type[Event]]] = {}
    for cls in sorted(_REGISTRY.values(), key=lambda c: (c.topic, c.type)):
        by_topic.setdefault(cls.topic, []).append(cls)
    for topic, classes in by_topic.items():
        lines += [f"## Topic `{topic}`", ""]
        for cls in classes:
            lines += [
                f"### `{cls.type}`",
                "",
                f"Source `{cls.source}`, key `{cls.key_field}`. {cls.doc}".rstrip(),
                "",
            ]
            schema = cls.model_json_schema()
            lines += _fields_table(schema)
            # the nested models its fields name (e.g. a pickup's lines), each with its own fields
            for name, nested in schema.get("$defs", {}).items():
                lines += [f"`{name}`:", "", *_fields_table(nested)]
    return "\n".join(lines)


def _fields_table(schema: dict[str, Any]) -> list[str]:
    lines = ["| field | type | required |", "|---|---|---|"]
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        lines.append(f"| `{name}` | {_type_name(prop)} | {'yes' if name in required else 'no'} |")
    return [*lines, ""]


def _type_name(prop: dict[str, Any]) -> str:
    if "type" in prop:
        t = prop["type"]
        if t == "array":
            return f"array of {_type_name(prop.get('items', {}))}"
        if "enum" in prop:
            return f"{t}: " + " \\| ".join(f"`{v}`" for v in prop["enum"])
        return f"{t} ({prop['format']})" if "format" in prop else str(t)
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in prop:
        return " or ".join(_type_name(p) for p in prop["anyOf"])
    return json.dumps(prop)[:40]
