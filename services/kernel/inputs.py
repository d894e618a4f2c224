"""Input rules every service gets: hostile input is refused with a 400 naming the field, before any handler.

Applied for free by the HTTP plumbing (`services.kernel.http`) to every route's body, query and path:

- a JSON body must be sent as JSON (`Content-Type: application/json` or `*+json`; else 415) and nest at most
  `MAX_JSON_DEPTH` levels, checked on the raw bytes *before* parsing (a depth bomb costs a scan, not a stack);
- no string anywhere in it (keys included) may hold NUL or another control character (tab, newline and carriage
  return aside) or a bidirectional override / isolate (U+202A–U+202E, U+2066–U+2069: "Trojan Source" spoofing);
- numbers are strict: integers are JSON integers (never `true`, `2.0` or `"21"`), floats are JSON numbers, a
  field typed `Decimal` takes a plain ASCII decimal string or number ("12.345"; never "２_１", "1E2", "NaN"), and
  query parameters typed int/float/Decimal are plain ASCII numerals too; NaN and Infinity are refused;
- path parameters must look like ids (`PATH_PARAM`): anything else is a 404 that does not echo it.

Field types for what only the model knows (annotate fields with them):

- `Identifier` — codes, numbers, names of things that are compared (filing numbers, tracking numbers, serials):
  NFKC-normalised (full-width letters and digits become ASCII), and no control or format character at all
  (zero-width spaces and joiners included);
- `Name` — what people read as a name (person, firm, listing title): NFC, no control or format character;
- `Text` — free text (addresses, notes, complaints, descriptions): NFC; newlines and emoji allowed;
- `HttpUrl` — an absolute http(s) URL with a host, no credentials, no spaces;
- `DecimalStr` — a plain decimal string, as a `Decimal`;
- `Instant` — a moment in RFC 3339 with its offset (a naive time is ambiguous), that has a UTC time
  (`0001-01-01T00:00+14:00` has none: a 400 naming the field, not an OverflowError deep in a handler);
- `EntityId` — an id of the platform's shape (`prefix_…`, at most 49 characters; see services/kernel/ids.py);
  whether it names something that exists is the handler's check (404 / 422 naming the field).
"""

from __future__ import annotations

import json
import re
import types
import typing
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, BeforeValidator

from .errors import ValidationFailed

MAX_JSON_DEPTH = 32
JSON_TYPES = ("application/json",)
# ids as services/kernel/ids.py makes them (`us_0190…`), and the codes routes take in their paths
PATH_PARAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}")
ENTITY_ID = re.compile(r"[a-z][a-z0-9]{0,7}_[0-9A-Za-z_-]{1,40}")
PLAIN_DECIMAL = re.compile(r"-?[0-9]+(\.[0-9]+)?")
PLAIN_INT = re.compile(r"-?[0-9]+")
# C0 controls except \t \n \r, DEL, C1 controls, and the bidirectional overrides and isolates
_HOSTILE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class UnsupportedMediaType(ValidationFailed):
    status = 415
    slug = "unsupported-media-type"
    title = "Unsupported media type"


# --- raw body checks (before parsing) ------------------------------------------------------------------

_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def check_json_depth(raw: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a body nesting arrays/objects deeper than `limit` — on the bytes, so nothing recursive runs."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return  # cannot nest deeper than it has brackets
    depth = 0
    for m in _TOKENS.finditer(raw):
        t = m.group()
        if t in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise ValidationFailed.field("body", f"JSON nested deeper than {limit} levels")
        elif t in (b"]", b"}"):
            depth -= 1


def check_content_type(content_type: str) -> None:
    ctype = content_type.split(";", 1)[0].strip().lower()
    if ctype in JSON_TYPES or (ctype.startswith("application/") and ctype.endswith("+json")):
        return
    raise UnsupportedMediaType(
        [{"field": "Content-Type", "message": "send the body as application/json"}],
        detail=f"this route takes JSON, not {ctype or 'an untyped body'}",
    )


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def parse_json(raw: bytes) -> Any:
    """The body as JSON, after the depth check; NaN and Infinity are refused; hostile characters are refused."""
    check_json_depth(raw)
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:  # pragma: no cover - the depth check comes first
        raise ValidationFailed.field("body", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailed.field("body", "not valid JSON") from None
    check_strings(data)
    return data


def check_strings(data: Any, path: str = "") -> None:
    """Refuse NUL, control characters and bidi overrides in every string (and key) of parsed JSON."""
    if isinstance(data, str):
        _check_text(data, path or "body")
    elif isinstance(data, dict):
        for k, v in data.items():
            where = f"{path}.{k}" if path else str(k)
            _check_text(k, where)
            check_strings(v, where)
    elif isinstance(data, list):
        for i, v in enumerate(data):
            check_strings(v, f"{path}.{i}" if path else str(i))


def _check_text(s: str, field: str) -> None:
    m = _HOSTILE.search(s)
    if m:
        raise ValidationFailed.field(field[:100], f"contains the control character U+{ord(m.group()):04X}")


# --- strict numbers, generically from the model --------------------------------------------------------


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types an annotation admits (Optional/Union/Annotated unwrapped)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a)]
    return [tp]


def check_plain_decimals(model: type[BaseModel], data: Any, path: str = "") -> None:
    """Fields typed `Decimal` (at any depth) take plain ASCII decimals only: Python's Decimal() would read
    "２_１" as 21 and "1E2" as 100."""
    if not isinstance(data, dict):
        return
    for name, f in model.model_fields.items():
        key = f.alias or name
        if key not in data:
            continue
        _check_value(f.annotation, data[key], f"{path}{key}")


def _check_value(tp: Any, value: Any, where: str) -> None:
    for t in _unwrap(tp):
        origin = typing.get_origin(t)
        if t is Decimal and isinstance(value, str) and not PLAIN_DECIMAL.fullmatch(value):
            raise ValidationFailed.field(where, 'must be a plain decimal number such as "12.345"')
        if isinstance(t, type) and issubclass(t, BaseModel):
            check_plain_decimals(t, value, where + ".")
        elif origin in (list, tuple, set, frozenset) and isinstance(value, list):
            args = typing.get_args(t)
            for i, item in enumerate(value):
                _check_value(args[0] if args else Any, item, f"{where}.{i}")


def single_query_values(query: Mapping[str, str]) -> dict[str, str]:
    """The query as one value per name. No route reads a list from its query, so a name given twice is ambiguous:
    answering for the first (`?region=A&region=B` answered for A alone) would be a silent guess."""
    out: dict[str, str] = {}
    for name, value in query.items():  # a multidict yields each repeated name again
        if name in out:
            raise ValidationFailed.field(name, "given more than once: give it once")
        out[name] = value
    return out


def check_query_numbers(model: type[BaseModel], query: dict[str, str]) -> None:
    """Query parameters typed int/float/Decimal must be plain ASCII numerals ("2_1", " 21", "1E2" are not)."""
    for name, f in model.model_fields.items():
        raw = query.get(f.alias or name)
        if raw is None:
            continue
        kinds = {t for t in _unwrap(f.annotation) if t in (int, float, Decimal)}
        if not kinds or (str in _unwrap(f.annotation)):
            continue
        pattern = PLAIN_INT if kinds == {int} else PLAIN_DECIMAL
        if not pattern.fullmatch(raw):
            raise ValidationFailed.field(
                name, "must be a plain number" + (" (an integer)" if kinds == {int} else "")
            )


# --- field types --------------------------------------------------------------------------------------------


def _no_format_chars(v: str, what: str) -> str:
    for c in v:
        if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cs") and c not in "\t\n\r" or c in "\u2028\u2029":
            raise ValueError(f"{what} cannot contain the invisible character U+{ord(c):04X}")
    return v


def identifier(v: str) -> str:
    """NFKC (full-width → ASCII), trimmed; no control, format (zero-width, bidi) or separator-line characters."""
    v = unicodedata.normalize("NFKC", v).strip()
    if any(c in "\t\n\r" for c in v):
        raise ValueError("an identifier is one line without tabs")
    return _no_format_chars(v, "an identifier")


def name(v: str) -> str:
    v = " ".join(unicodedata.normalize("NFC", v).split())
    return _no_format_chars(v, "a name")


def text(v: str) -> str:
    v = unicodedata.normalize("NFC", v)
    m = _HOSTILE.search(v)
    if m:
        raise ValueError(f"the text cannot contain U+{ord(m.group()):04X}")
    return v


def http_url(v: str) -> str:
    v = v.strip()
    if len(v) > 2048:
        raise ValueError("a URL is at most 2048 characters")
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in v):
        raise ValueError("a URL cannot contain spaces or control characters")
    parts = urlsplit(v)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http(s) URL")
    if not parts.hostname:
        raise ValueError("must be an absolute URL with a host")
    if parts.username or parts.password:
        raise ValueError("a URL cannot carry credentials")
    return v


def decimal_str(v: Any) -> Decimal:
    if isinstance(v, bool) or not isinstance(v, (str, int, Decimal)):
        raise ValueError('must be a decimal string such as "12.345"')
    s = str(v)
    if not PLAIN_DECIMAL.fullmatch(s):
        raise ValueError('must be a plain decimal number such as "12.345"')
    return Decimal(s)


def entity_id(v: str) -> str:
    if not ENTITY_ID.fullmatch(v):
        raise ValueError("is not an id of this platform (e.g. fm_0190f0c2…)")
    return v


def instant(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("give an offset (RFC 3339), e.g. 2026-05-01T09:00:00+08:00")
    try:
        v.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: this time has no UTC equivalent") from None
    return v


Identifier = Annotated[str, AfterValidator(identifier)]
Name = Annotated[str, AfterValidator(name)]
Text = Annotated[str, AfterValidator(text)]
HttpUrl = Annotated[str, AfterValidator(http_url)]
DecimalStr = Annotated[Decimal, BeforeValidator(decimal_str)]
EntityId = Annotated[str, AfterValidator(entity_id)]
Instant = Annotated[datetime, AfterValidator(instant)]


def clip(value: str, limit: int = 48) -> str:
    """An untrusted value shortened for an error message (a 100 KB id is not echoed back)."""
    return value if len(value) <= limit else value[:limit] + "…"
