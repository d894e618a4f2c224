"""The distributed topology as processes on this host: the Kafka-protocol broker, one process per service on
PostgreSQL, the gateway forwarding to them. Driven only through the gateway's public API."""

from __future__ import annotations

import json
import os
import time

import pytest

from services.kernel.outbox import wait_until
from tests.e2e.flow import (
    http_get,
    http_post,
    log_tail,
    platform_process,
    whole_pickup_flow,
    whole_second_hand_flow,
    whole_trading_flow,
)
from workers.supervisor import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture(scope="module")
def dist(pg_url, redis_url, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    ready = tmp / "ready.json"
    port = free_port()
    env = dict(
        os.environ,
        DATA_DIR=str(tmp),
        DATABASE_URL=pg_url,
        REDIS_URL=redis_url,
        PORT=str(port),
        ENV="dev",
        KAFKA_SESSION_TIMEOUT_MS="2000",
        KAFKA_HEARTBEAT_INTERVAL_MS="250",
        ADMIN_PHONES="13900000001",
        # the closing job scans every second and a lot may end a few seconds ahead: the trading flow waits
        # seconds for the scheduled close, not minutes
        TRADING_CLOSE_INTERVAL_S="1",
        TRADING_MIN_DURATION_S="2",
        JWT_SECRET="dist-test-" + "x" * 40,
        PII_KEY="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )
    env.pop("KAFKA_BOOTSTRAP", None)
    log = tmp / "platform.log"
    with platform_process(["run-dist", "--ready-file", str(ready)], env, log) as proc:
        if (
            not wait_until(lambda: ready.exists() or proc.poll() is not None, timeout_s=180, interval_s=0.2)
            or not ready.exists()
        ):
            raise AssertionError("run-dist did not become ready:\n" + log_tail(log))
        yield json.loads(ready.read_text()) | {"log": log}


def test_gateway_forwards_to_service_processes(dist):
    base = dist["gateway"]
    assert http_get(base + "/healthz") == (200, {"status": "ok"})
    status, ready = http_get(base + "/readyz")
    assert status == 200, ready
    assert {f"service:{n}" for n in dist["services"]} <= set(ready["checks"])
    status, cats = http_get(base + "/v1/categories")
    assert status == 200 and any(c["code"] == "metal.steel" for c in cats)
    status, problem = http_get(base + "/v1/does-not-exist")
    assert status == 404 and problem["status"] == 404


def test_event_crosses_processes_over_kafka(dist):
    """pricing (its own process) publishes reference prices; booking (another process) consumes them over Kafka;
    the quote a resident sees when booking comes from booking's copy."""
    base = dist["gateway"]
    phone = "13912345678"
    status, otp = http_post(base + "/v1/auth/otp", {"phone": phone})
    assert status == 202, otp
    status, tok = http_post(base + "/v1/auth/token", {"phone": phone, "code": otp["dev_code"]})
    assert status == 200, tok
    auth = {"Authorization": f"Bearer {tok['access_token']}"}
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    day = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0
    )
    body = {
        "address": {"text": "北京市朝阳区某小区1号楼", "city_code": "110105", "lat": 39.92, "lng": 116.44},
        "window": {"start": day.isoformat(), "end": (day + timedelta(minutes=30)).isoformat()},
        "items": [{"category": "metal.copper", "est_qty": "2.000"}],
        "notes": "",
    }

    result = {}

    def quoted() -> bool:
        status, reply = http_post(
            base + "/v1/pickups", body, auth | {"Idempotency-Key": f"k{time.monotonic_ns()}"}
        )
        result["reply"] = (status, reply)
        return status == 201 and reply["quote"]["lines"][0]["unit_price_fen"] == 4500

    assert wait_until(quoted, timeout_s=60, interval_s=0.5), result
    assert result["reply"][1]["quote"]["total_fen"] == 9000


def test_whole_pickup_flow_across_processes(dist):
    """Resident and collector through the whole flow with every service in its own process: the firm and collector
    are verified (accounts → booking over Kafka), the pickup settles, invoicing issues the reverse invoice and
    payments pays the net (booking ↔ invoicing ↔ payments over Kafka)."""
    whole_pickup_flow(dist["gateway"])


def test_whole_second_hand_flow_across_processes(dist):
    """The second-hand flow with listings and payments in their own processes, their holds over Kafka."""
    whole_second_hand_flow(dist["gateway"])


def test_whole_trading_flow_across_processes(dist):
    """Two firms trade a lot from listing to settlement with trading, booking, payments and pricing each in its own
    process and the close done by the Celery beat job: the trace links the pickup that fed the lot to its delivery,
    the price index has the tier-1 point, and the worker's log shows the closing task ran without error."""
    whole_trading_flow(dist["gateway"])
    log = dist["log"].read_text()
    assert "trading.close_due_lots" in log and "succeeded" in log
    failed = [
        ln for ln in log.splitlines() if "trading.close_due_lots" in ln and ("raised" in ln or "Error" in ln)
    ]
    assert failed == [], failed
