"""The distributed topology as processes on this host: the Kafka-protocol broker, one process per service on
PostgreSQL, the gateway forwarding to them. Driven only through the gateway's public API."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from services.kernel.outbox import wait_until
from workers.supervisor import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def _get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def dist(pg_url, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    ready = tmp / "ready.json"
    port = free_port()
    env = dict(os.environ, DATA_DIR=str(tmp), DATABASE_URL=pg_url, REDIS_URL=redis_url, PORT=str(port),
               ENV="dev", KAFKA_SESSION_TIMEOUT_MS="2000", KAFKA_HEARTBEAT_INTERVAL_MS="250",
               ADMIN_PHONES="13900000001", JWT_SECRET="dist-test-" + "x" * 40,
               PII_KEY="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=")
    env.pop("KAFKA_BOOTSTRAP", None)
    log = open(tmp / "platform.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "run-dist", "--ready-file", str(ready)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        if not wait_until(lambda: ready.exists() or proc.poll() is not None, timeout_s=180, interval_s=0.2) \
                or not ready.exists():
            raise AssertionError("run-dist did not become ready:\n" + Path(tmp / "platform.log").read_text()[-4000:])
        yield json.loads(ready.read_text()) | {"log": tmp / "platform.log"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def test_gateway_forwards_to_service_processes(dist):
    base = dist["gateway"]
    assert _get(base + "/healthz") == (200, {"status": "ok"})
    status, ready = _get(base + "/readyz")
    assert status == 200, ready
    assert {f"service:{n}" for n in dist["services"]} <= set(ready["checks"])
    status, cats = _get(base + "/v1/categories")
    assert status == 200 and any(c["code"] == "metal.steel" for c in cats)
    status, problem = _get(base + "/v1/does-not-exist")
    assert status == 404 and problem["status"] == 404


def test_event_crosses_processes_over_kafka(dist):
    """pricing (its own process) publishes reference prices; booking (another process) consumes them over Kafka;
    the quote a resident sees when booking comes from booking's copy."""
    base = dist["gateway"]
    phone = "13912345678"
    status, otp = _post(base + "/v1/auth/otp", {"phone": phone})
    assert status == 202, otp
    status, tok = _post(base + "/v1/auth/token", {"phone": phone, "code": otp["dev_code"]})
    assert status == 200, tok
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    day = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).replace(hour=10, minute=0, second=0,
                                                                                 microsecond=0)
    body = {"address": {"text": "北京市朝阳区某小区1号楼", "city_code": "110105", "lat": 39.92, "lng": 116.44},
            "window": {"start": day.isoformat(), "end": (day + timedelta(minutes=30)).isoformat()},
            "items": [{"category": "metal.copper", "est_qty": "2.000"}], "notes": ""}

    result = {}

    def quoted() -> bool:
        status, reply = _post(base + "/v1/pickups", body, auth | {"Idempotency-Key": f"k{time.monotonic_ns()}"})
        result["reply"] = (status, reply)
        return status == 201 and reply["quote"]["lines"][0]["unit_price_fen"] == 4500

    assert wait_until(quoted, timeout_s=60, interval_s=0.5), result
    assert result["reply"][1]["quote"]["total_fen"] == 9000


def test_whole_pickup_flow_across_processes(dist):
    """Resident and collector through the whole flow with every service in its own process: the firm and collector
    are verified (accounts → booking over Kafka), the pickup settles, invoicing issues the reverse invoice and
    payments pays the net (booking ↔ invoicing ↔ payments over Kafka)."""
    from tests.booking.support import HOME, booking_body

    base = dist["gateway"]
    n = [0]

    def call(method: str, path: str, token: str | None = None, body: dict | None = None,
             status: int = 200) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST":
            n[0] += 1
            got = _post(base + path, body or {}, headers | {"Idempotency-Key": f"flow-{n[0]}"})
        else:
            got = _get(base + path, headers)
        assert got[0] == status, (method, path, got)
        return got[1]

    def login(phone: str) -> dict:
        otp = call("POST", "/v1/auth/otp", body={"phone": phone}, status=202)
        return call("POST", "/v1/auth/token", body={"phone": phone, "code": otp["dev_code"]})

    admin = login("13900000001")["access_token"]
    resident = login("13700001111")["access_token"]
    owner = login("13800138000")["access_token"]
    firm = call("POST", "/v1/firms", owner, {
        "name": "绿色再生资源回收有限公司", "uscc": "91350100M000100Y43", "recycler_filing_no": "BA-2024-0001",
        "address": "北京市朝阳区某路1号", "city_code": "110105"}, status=201)
    call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
    qual = call("POST", f"/v1/firms/{firm['id']}/qualifications", owner, {
        "kind": "recycler_filing", "number": "BA-2024-0001", "valid_until": "2099-12-31"}, status=201)
    call("POST", f"/v1/admin/verifications/qualification/{qual['id']}/approve", admin)
    call("POST", "/v1/me/identity", resident, {"real_name": "张三", "id_number": "11010519491231002X"})
    call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    applicant = login("15011112222")["access_token"]
    col = call("POST", "/v1/collectors", applicant, {
        "real_name": "王五", "id_number": "44030519900101123X", "firm_id": firm["id"],
        "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
        "categories": ["paper.cardboard", "metal.copper"]}, status=201)
    call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = login("15011112222")["access_token"]

    pid = call("POST", "/v1/pickups", resident, booking_body(), status=201)["id"]
    # booking learns of the verified collector from accounts' event, over Kafka
    assert wait_until(lambda: any(j["id"] == pid for j in _get(
        base + "/v1/jobs", {"Authorization": f"Bearer {collector}"})[1].get("items", [])), 60, 0.3)
    assert call("POST", f"/v1/jobs/{pid}/accept", collector)["collector_id"] == col["id"]
    call("POST", f"/v1/pickups/{pid}/arrive", collector)
    weighed = call("POST", f"/v1/pickups/{pid}/weigh", collector, {
        "lines": [{"category": "paper.cardboard", "qty": "13.2"}, {"category": "metal.copper", "qty": "1.25"}]})
    total = weighed["total_fen"]
    call("POST", f"/v1/pickups/{pid}/settle", resident)

    def paid() -> bool:
        view = call("GET", f"/v1/pickups/{pid}", resident)
        return (view.get("payout") or {}).get("status") == "paid"

    assert wait_until(paid, 90, 0.5), call("GET", f"/v1/pickups/{pid}", resident)
    view = call("GET", f"/v1/pickups/{pid}", resident)
    assert view["invoice"]["status"] == "issued"
    assert view["payout"]["amount_fen"] == total - view["withheld_fen"]
    invoices = call("GET", "/v1/invoices?period=" + view["invoice"].get("issued_at", "")[:7], resident) \
        if view["invoice"].get("issued_at") else call("GET", "/v1/invoices", resident)
    assert [i["pickup_id"] for i in invoices["items"]] == [pid]
    assert invoices["items"][0]["total_fen"] == total
