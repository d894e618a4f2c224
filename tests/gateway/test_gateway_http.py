"""The gateway's HTTP behaviour: problem+json for every error, request ids, body limit, CORS, metrics, health,
readiness, the OpenAPI document and the offline docs page."""

from __future__ import annotations

import re

from services.accounts import handlers
from services.kernel.idempotency import KEYED_METHODS
from tests.gateway.support import call, login, start

PROBLEM = "application/problem+json"


async def _problem(r) -> dict:  # noqa: ANN001
    assert r.content_type == PROBLEM, (r.status, r.content_type)
    body = await r.json()
    assert body["status"] == r.status and body["type"] and body["title"] and "detail" in body
    return body


async def test_every_error_is_a_problem(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    _, client = await start(aiohttp_client, sqlite_settings.model_copy(update={"max_body_bytes": 1000}))
    r = await client.get("/v1/no-such-thing")
    assert r.status == 404 and (await _problem(r))["instance"] == "/v1/no-such-thing"
    r = await client.delete("/v1/me")
    assert r.status == 405 and "GET" in r.headers["Allow"]
    await _problem(r)
    r = await client.post("/v1/auth/otp", data=b"x" * 5000, headers={"Content-Type": "application/json"})
    assert r.status == 413 and (await _problem(r))["detail"] == "request body too large"

    async def chunks():  # noqa: ANN202 - no Content-Length: aiohttp's own limit applies when the body is read
        for _ in range(10):
            yield b"y" * 500

    r = await client.post("/v1/auth/otp", data=chunks(), headers={"Content-Type": "application/json"})
    assert r.status == 413
    await _problem(r)
    r = await client.post("/v1/auth/otp", data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400 and (await _problem(r))["errors"] == [
        {"field": "body", "message": "not valid JSON"}
    ]
    r = await client.post("/v1/auth/otp", json={"phone": 13812345678, "extra": 1})
    errors = (await _problem(r))["errors"]
    assert r.status == 400 and {e["field"] for e in errors} == {"phone", "extra"}
    assert all(set(e) == {"field", "message"} for e in errors)
    r = await client.get("/v1/me")
    assert r.status == 401
    await _problem(r)


async def test_500_hides_the_cause(aiohttp_client, sqlite_settings, monkeypatch) -> None:  # noqa: ANN001
    from sqlalchemy.exc import OperationalError

    def broken(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("SELECT phone_enc FROM users WHERE id = ?", {}, Exception("disk I/O error"))

    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, "13812345678")
    monkeypatch.setattr(handlers, "me", broken)
    r = await client.get("/v1/me", headers=user.auth | {"X-Request-Id": "rq-test-500"})
    body = await _problem(r)
    text = str(body)
    assert r.status == 500 and body["request_id"] == "rq-test-500" == r.headers["X-Request-Id"]
    for leak in ("SELECT", "phone_enc", "Traceback", "disk I/O", "OperationalError", ".py"):
        assert leak not in text


async def test_request_ids(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    _, client = await start(aiohttp_client, sqlite_settings)
    r = await client.get("/healthz")
    assert r.headers["X-Request-Id"].startswith("rq_")
    r = await client.get("/healthz", headers={"X-Request-Id": "abc-123"})
    assert r.headers["X-Request-Id"] == "abc-123"
    r = await client.get("/nope", headers={"X-Request-Id": "abc-404"})
    assert r.headers["X-Request-Id"] == "abc-404"


async def test_cors_only_for_the_configured_origin(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    origin = "https://console.recycle.example.cn"
    _, client = await start(aiohttp_client, sqlite_settings.model_copy(update={"cors_origin": origin}))
    pre = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }
    r = await client.options("/v1/firms", headers=pre)
    assert r.status == 204 and r.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "authorization, content-type, idempotency-key"
    assert r.headers["X-Request-Id"]
    r = await client.get("/v1/me", headers={"Origin": origin})  # an error reply carries CORS headers too
    assert r.status == 401 and r.headers["Access-Control-Allow-Origin"] == origin
    assert "X-Request-Id" in r.headers["Access-Control-Expose-Headers"]

    evil = "https://evil.example.com"
    r = await client.options("/v1/firms", headers=pre | {"Origin": evil})
    assert r.status == 403 and "Access-Control-Allow-Origin" not in r.headers
    assert not any(h.lower().startswith("access-control-") for h in r.headers)
    r = await client.get("/healthz", headers={"Origin": evil})
    assert r.status == 200 and not any(h.lower().startswith("access-control-") for h in r.headers)


async def test_metrics_by_route_template_and_status(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    platform, client = await start(
        aiohttp_client, sqlite_settings.model_copy(update={"metrics_token": "scrape-me"})
    )
    user = await login(client, platform, "13812345678")
    await call(client, "GET", "/v1/firms/fm_one", user)
    await call(client, "GET", "/v1/firms/fm_two", user)
    await call(client, "GET", "/nope")
    assert (await client.get("/metrics")).status == 401  # not public (issue 12)
    r = await client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert r.status == 200 and r.content_type == "text/plain"
    text = await r.text()
    assert 'http_requests_total{method="GET",route="/v1/firms/{id}",status="404"} 2.0' in text
    assert 'http_requests_total{method="POST",route="/v1/auth/token",status="200"} 1.0' in text
    assert 'route="<unmatched>",status="404"' in text
    assert re.search(
        r'http_request_duration_seconds_count\{method="GET",route="/v1/firms/\{id\}",status="404"\} 2', text
    )
    assert "fm_one" not in text


async def test_health_and_readiness(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    _, client = await start(aiohttp_client, sqlite_settings)
    st, body = await call(client, "GET", "/healthz")
    assert (st, body) == (200, {"status": "ok"})
    st, body = await call(client, "GET", "/readyz")
    assert st == 200 and body["status"] == "ok"
    assert body["checks"]["db:accounts"] == "ok" and body["checks"]["bus"] == "ok"


async def test_readiness_reports_a_dead_dependency(aiohttp_client, sqlite_settings, redis_url) -> None:  # noqa: ANN001
    _, client = await start(aiohttp_client, sqlite_settings.model_copy(update={"redis_url": redis_url}))
    st, body = await call(client, "GET", "/readyz")
    assert st == 200 and body["checks"]["redis"] == "ok"
    _, client = await start(
        aiohttp_client,
        sqlite_settings.model_copy(
            update={"redis_url": "redis://127.0.0.1:1/0", "data_dir": sqlite_settings.data_dir / "b"}
        ),
    )
    st, body = await call(client, "GET", "/readyz")
    assert st == 503 and body["status"] == "unavailable" and body["checks"]["redis"].startswith("error")


async def test_openapi_document(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    from gateway.app import all_routes

    _, client = await start(aiohttp_client, sqlite_settings)
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    for route in all_routes():
        path = re.sub(r"{(\w+)(?::[^}]*)?}", r"{\1}", route.path)
        op = doc["paths"][path][route.method.lower()]
        assert op["x-policy"] == route.policy.describe()
        if route.method in KEYED_METHODS:  # POST, PATCH, PUT, DELETE
            assert any(p["name"] == "Idempotency-Key" for p in op["parameters"])
            assert {"409", "422", "429"} <= set(op["responses"])
        if route.policy.kind != "public":
            assert op["security"] == [{"bearer": []}] and {"401", "403"} <= set(op["responses"])
    # accounts replies are described by their models
    for path, method in [("/v1/auth/token", "post"), ("/v1/me", "get"), ("/v1/firms", "post")]:
        op = doc["paths"][path][method]
        ok = next(s for s in op["responses"] if s.startswith("2"))
        schema = op["responses"][ok]["content"]["application/json"]["schema"]
        assert schema.get("$ref", "").startswith("#/components/schemas/"), (path, schema)
    token = doc["components"]["schemas"]["TokenOut"]
    assert {"access_token", "refresh_token", "token_type", "user_id", "roles"} <= set(token["required"])
    assert doc["paths"]["/v1/auth/refresh"]["post"]["x-policy"] == "public"
    assert "/metrics" in doc["paths"] and "/healthz" in doc["paths"]


async def test_docs_page_works_offline(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    _, client = await start(aiohttp_client, sqlite_settings)
    r = await client.get("/docs")
    html = await r.text()
    assert r.status == 200 and r.content_type == "text/html"
    assert "/openapi.json" in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), (
        "the page must not load anything remote"
    )
