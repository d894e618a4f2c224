"""Structured logs: one JSON access line per request, and no phone number, ID number or token in clear anywhere —
neither in replies nor in what any logger writes."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from tests.gateway.support import ID_NUMBER, call, login, start
from workers.logs import configure_logging, redact, redact_text

PHONE = "13812345678"


@pytest.fixture
def log_output(sqlite_settings):  # noqa: ANN001, ANN201
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging(sqlite_settings, stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    structlog.reset_defaults()


def test_redaction_processor() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c18xIn0.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
    event = {
        "event": f"login by {PHONE} id {ID_NUMBER} with Bearer abc.def.ghi",
        "nested": {"list": [f"+86 {PHONE}", {"deep": jwt}], "n": 13812345678},
        "phone": "+8613812345678",
        "code": "907153",
        "request_id": "rq_0192a8123456789012345b",
        "count": 12,
        "latency": 1.5,
        "ok": True,
    }
    out = json.dumps(redact(None, "info", event), ensure_ascii=False)
    for secret in (PHONE, ID_NUMBER, jwt, "abc.def.ghi", "907153", "13812345678"):
        assert secret not in out, secret
    red = redact(None, "info", event)
    assert "138****5678" in red["event"] and "110***********002X" in red["event"]
    assert red["request_id"] == event["request_id"] and red["count"] == 12 and red["ok"] is True
    assert redact_text("订单 8613812345678 已完成") == "订单 138****5678 已完成"
    assert redact_text("timestamp 1712345678901 stays") == "timestamp 1712345678901 stays"


async def test_access_log_and_no_personal_data(aiohttp_client, sqlite_settings, log_output) -> None:  # noqa: ANN001
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, PHONE)
    st, body = await call(
        client, "POST", "/v1/me/identity", user, json={"real_name": "张三", "id_number": ID_NUMBER}
    )
    assert (
        st == 200 and ID_NUMBER not in json.dumps(body) and "张三" not in json.dumps(body, ensure_ascii=False)
    )
    st, me = await call(client, "GET", "/v1/me", user)
    assert PHONE not in json.dumps(me) and me["phone_masked"] == "138****5678"
    await call(client, "GET", f"/v1/firms/{PHONE}", user)  # personal data in a path
    await call(client, "POST", "/v1/auth/otp", json={"phone": "1381234567"})  # a bad phone, echoed nowhere
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {user.access_token}x"})
    assert r.status == 401
    # other loggers: the standard library and structlog, with personal data in arguments and fields
    logging.getLogger("somewhere").warning("callback for %s (%s): %s", PHONE, ID_NUMBER, user.access_token)
    structlog.get_logger("elsewhere").info(
        "sent", phone=PHONE, payload={"id_number": ID_NUMBER, "headers": [f"Bearer {user.refresh_token}"]}
    )
    try:
        raise ValueError(f"bad row for {PHONE}")
    except ValueError:
        logging.getLogger("somewhere").exception("failed")

    text = log_output.getvalue()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for secret in (
        PHONE,
        ID_NUMBER,
        user.access_token,
        user.refresh_token,
        "张三",
        user.access_token.split(".")[2],
    ):
        assert secret not in text, secret
    access = [line for line in lines if line.get("logger") == "gateway.access"]
    assert len(access) >= 7
    first = access[0]
    assert first["event"] == "request" and first["http_method"] == "POST" and first["route"] == "/v1/auth/otp"
    assert first["status"] == 202 and first["request_id"].startswith("rq_") and first["duration_ms"] >= 0
    me_line = next(line for line in access if line["route"] == "/v1/me" and line["status"] == 200)
    assert me_line["user_id"] == user.user_id and me_line["level"] == "info" and "timestamp" in me_line
    firm_line = next(line for line in access if line["route"] == "/v1/firms/{id}")
    assert firm_line["path"] == "/v1/firms/138****5678"
    assert any(line.get("logger") == "elsewhere" and line["phone"] == "138****5678" for line in lines)
    assert any("exception" in line and "138****5678" in line["exception"] for line in lines)
