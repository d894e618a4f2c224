"""Structured JSON logs (structlog) for every process, with personal data and secrets redacted.

Both structlog loggers and the standard library's (aiohttp, SQLAlchemy, our `logging.getLogger`) end in one JSON
renderer, and every event passes `redact` first: whatever a log call carries — a message, a field, a nested dict,
an exception text — phone numbers, 身份证号, bearer tokens and JWTs never reach the output in clear.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import IO, Any

import structlog

from services.kernel.pii import mask_id, mask_phone
from services.kernel.settings import Settings

# Field names whose values are secrets or personal data whatever they look like.
SECRET_KEYS = frozenset(
    {
        "authorization",
        "token",
        "access_token",
        "refresh_token",
        "password",
        "secret",
        "code",
        "dev_code",
        "otp",
        "jwt_secret",
        "pii_key",
        "cookie",
        "set-cookie",
        "api_key",
        "stripe_api_key",
    }
)
PII_KEYS = frozenset({"phone", "mobile", "id_number", "real_name", "name_full", "id_card", "bank_card"})

_ALNUM_BEFORE = r"(?<![0-9A-Za-z])"
_ALNUM_AFTER = r"(?![0-9A-Za-z])"
# A JWT: three base64url parts, the first being a JSON header ("eyJ" = '{"').
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]+")
# 身份证号: 17 digits + digit or X; mobile numbers: 11 digits starting with 1 (optionally +86 / 86 in front).
_ID_NUMBER = re.compile(_ALNUM_BEFORE + r"\d{17}[\dXx]" + _ALNUM_AFTER)
_PHONE = re.compile(_ALNUM_BEFORE + r"(?:\+?86[ -]?)?(1\d{10})" + _ALNUM_AFTER)


def redact_text(text: str) -> str:
    text = _JWT.sub("[jwt redacted]", text)
    text = _BEARER.sub(lambda m: m.group(1) + " [redacted]", text)
    text = _ID_NUMBER.sub(lambda m: mask_id(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(1)), text)


def _redact_value(key: str | None, value: Any, depth: int = 0) -> Any:
    k = key.lower() if isinstance(key, str) else None
    if k in SECRET_KEYS and value not in (None, ""):
        return "[redacted]"
    if isinstance(value, str):
        if k in PII_KEYS:
            return (
                mask_phone(value)
                if k in ("phone", "mobile")
                else mask_id(value)
                if "id" in k
                else "[redacted]"
            )
        return redact_text(value)
    if depth > 8:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {
            kk: _redact_value(kk if isinstance(kk, str) else None, vv, depth + 1) for kk, vv in value.items()
        }
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(None, v, depth + 1) for v in value]
    if value is None or isinstance(value, (bool, float)):
        return value
    if isinstance(value, int):
        return "[redacted]" if k in PII_KEYS else _int_value(value)
    return redact_text(str(value))


def _int_value(value: int) -> int | str:
    """An 11-digit integer that looks like a phone number is masked too."""
    s = str(value)
    return mask_phone(s) if len(s) == 11 and s.startswith("1") else value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask phones, ID numbers, bearer tokens and JWTs anywhere in the event."""
    return {k: _redact_value(k, v) for k, v in event_dict.items()}


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(settings: Settings, stream: IO[str] | None = None) -> None:
    """JSON lines on stderr (or `stream`): one configuration for structlog and the standard library."""
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                redact,
                structlog.processors.JSONRenderer(ensure_ascii=False, default=str),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
