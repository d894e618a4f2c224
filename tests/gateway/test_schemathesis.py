"""Schemathesis against the /openapi.json of a running gateway (embedded, a real server on a free port).

Every operation is called with generated data (valid and invalid), as a real user holding every role: no reply may
be a 5xx, and every reply must match the document (status code listed, content type, body schema). Streams (SSE,
WebSocket) are left out: they never end. Bounded: a few examples per operation (SCHEMATHESIS_MAX_EXAMPLES).
"""

from __future__ import annotations

import asyncio
import os
import threading

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from gateway.app import all_routes, create_app_over
from services.accounts import handlers
from services.accounts.sms import sms_of
from services.bootstrap import Platform
from services.kernel.auth import ROLES, Principal, issue_token
from services.kernel.settings import Settings

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "6"))
STREAMS = [r.operation_id for r in all_routes() if r.raw]


class LiveGateway:
    """The embedded gateway served by aiohttp in a thread with its own event loop."""

    def __init__(self, settings: Settings):
        self.platform = Platform(settings).prepare()
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="live-gateway", daemon=True)
        self.url = ""

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self.ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        app = create_app_over(self.platform)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        assert self.ready.wait(60), "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def live(tmp_path_factory):  # noqa: ANN001, ANN201
    settings = Settings(
        env="test",
        data_dir=tmp_path_factory.mktemp("schemathesis"),
        bus="dblog",
        jwt_secret="schemathesis-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
        rate_limit_per_minute=1_000_000,
        rate_limit_ip_per_minute=1_000_000,
    )
    with LiveGateway(settings) as gw:
        yield gw


@pytest.fixture(scope="module")
def auth_headers(live) -> dict[str, str]:  # noqa: ANN001
    """A real user (logged in with a code) whose token holds every role."""
    rt = live.platform["accounts"]
    phone = "13700000000"
    handlers.request_otp(rt, phone)
    user = handlers.login(rt, phone, sms_of(rt).last_code(phone))
    token = issue_token(live.platform.settings, Principal(user.user_id, ROLES))
    return {"Authorization": f"Bearer {token}"}


def _document() -> dict:
    """The document the gateway serves at /openapi.json (built from the same route table at import time, so
    schemathesis can parametrize at collection; the test checks the live server serves exactly this)."""
    from gateway.app import SYSTEM_ROUTES, VERSION
    from gateway.openapi import build_openapi

    return build_openapi(all_routes(), SYSTEM_ROUTES, "Recycling marketplace API", VERSION)


# Failures schemathesis found in other teams' routes, reported to their owners. Those operations are left out
# of the run below and reproduced by `test_known_issues_are_still_there` (xfail: it XPASSes once fixed).
# Remove an entry when its fix lands.
# Operations excluded from the schemathesis run because of a known bug, with the input that shows it. Keep this
# empty: a bug found here gets fixed, then the input below stays as a regression test.
KNOWN_ISSUES: dict[str, str] = {}
REGRESSION_INPUTS = {
    # parse_qty raised decimal.InvalidOperation (a 500) for a huge quantity: now a 400 naming the field
    "POST /v1/pickups": {
        "address": {"text": "x", "city_code": "110105", "lat": 39.9, "lng": 116.4},
        "window": {"start": "2030-01-01T09:00:00+08:00", "end": "2030-01-01T10:00:00+08:00"},
        "items": [{"category": "metal.copper", "est_qty": 1e133}],
        "notes": "",
    },
    "POST /v1/pickups/{id}/weigh": {"lines": [{"category": "metal.copper", "qty": 1e133}]},
}

DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
_EXCLUDED = STREAMS + [
    op["operationId"]
    for path, ops in DOCUMENT["paths"].items()
    for m, op in ops.items()
    if f"{m.upper()} {path}" in KNOWN_ISSUES
]
if _EXCLUDED:
    schema = schema.exclude(operation_id=_EXCLUDED)


def test_the_live_server_serves_this_document(live) -> None:  # noqa: ANN001
    import json
    import urllib.request

    with urllib.request.urlopen(live.url + "/openapi.json", timeout=10) as r:
        assert json.loads(r.read()) == json.loads(json.dumps(DOCUMENT))


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_document(case, live, auth_headers) -> None:  # noqa: ANN001
    case.call_and_validate(
        base_url=live.url,
        headers=auth_headers,
        timeout=20,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


@pytest.mark.parametrize("label", sorted(REGRESSION_INPUTS))
def test_inputs_schemathesis_once_broke_are_refused_cleanly(label: str, live, auth_headers) -> None:  # noqa: ANN001
    import json
    import urllib.error
    import urllib.request

    method, path = label.split(" ", 1)
    body = json.dumps(REGRESSION_INPUTS[label]).encode()
    req = urllib.request.Request(
        live.url + path.replace("{id}", "pk_missing"),
        data=body,
        method=method,
        headers=auth_headers | {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status = r.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    assert 400 <= status < 500, f"{label}: {status}"
