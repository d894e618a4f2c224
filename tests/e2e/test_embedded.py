"""The embedded run as its user starts it (`recycle run`): the gateway, the background process (relays and
consumers) and the Celery worker, on SQLite in a fresh data directory. Driven only through the public API."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from services.kernel.checkdigits import uscc_check_char
from services.kernel.outbox import wait_until
from tests.e2e.flow import (
    embedded_run,
    http_get,
    http_post,
    readme_wipe_to_phone_listing_flow,
    whole_pickup_flow,
    whole_second_hand_flow,
    whole_trading_flow,
)
from workers.supervisor import free_port


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    port = free_port()
    with embedded_run(
        tmp,
        port,
        ADMIN_PHONES="13900000001",
        INVOICING_EXPORT_QUEUED_DEADLINE_S="20",
        INVOICING_EXPORT_REQUEUE_EVERY_S="5",
        # the closing job scans every second, a lot may end a few seconds ahead (the trading flow)
        TRADING_CLOSE_INTERVAL_S="1",
        TRADING_MIN_DURATION_S="2",
        JWT_SECRET="embedded-test-" + "x" * 40,
        PII_KEY="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    ) as (base, log, proc):
        yield {"gateway": base, "log": log, "pid": proc.pid}


def test_embedded_run_has_its_three_processes(embedded):
    """Gateway (requests), background (relays and consumers), Celery (timers and exports)."""

    def children() -> str:
        out = subprocess.run(
            ["ps", "-ww", "-o", "args=", "--ppid", str(embedded["pid"])], capture_output=True, text=True
        )
        return out.stdout

    assert wait_until(lambda: "background" in children() and "celery" in children(), 60, 0.2), children()
    assert "serve --no-background" in children()


def test_whole_pickup_flow_on_the_embedded_run(embedded):
    """Every event hop (accounts → booking, booking → invoicing → booking → payments → booking) is carried by the
    background process: the gateway process runs none of it."""
    whole_pickup_flow(embedded["gateway"])


def test_whole_second_hand_flow_on_the_embedded_run(embedded):
    """A seller lists, a buyer finds it with a two-character query, pays in the sandbox (escrow), receives and
    reviews, and the seller is paid: listings ↔ payments over the embedded log, the indexer in the background."""
    whole_second_hand_flow(embedded["gateway"])


def test_readme_wipe_walkthrough_and_a_phone_listing_on_the_embedded_run(embedded):
    """The README's data-wipe walk-through (tool, operator, signed report, public certificate) and its phone
    listing, published on that certificate: wipe → listings over the embedded log."""
    readme_wipe_to_phone_listing_flow(embedded["gateway"], "13900000001")


@contextlib.contextmanager
def amqp_port_taken() -> Iterator[str]:
    """Something listening on Celery's default broker address (localhost:5672): the host's own AMQP broker if it
    has one, else a decoy that accepts connections and never answers. A task published through Celery's default
    app instead of the project's ends up there and is never run."""
    probe = socket.socket()
    try:
        if probe.connect_ex(("127.0.0.1", 5672)) == 0:
            yield "the host's AMQP broker"
            return
    finally:
        probe.close()
    decoy = socket.socket()
    decoy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    decoy.bind(("127.0.0.1", 5672))
    decoy.listen(16)
    try:
        yield "a decoy"
    finally:
        decoy.close()


def _export_through_the_api(base: str, owner_phone: str, accountant_phone: str) -> dict:
    """A firm owner names an accountant, who asks for the month's detail report and waits until it is done."""

    def post(path: str, body: dict, token: str | None = None, status: int = 200) -> dict:
        h = {"Idempotency-Key": uuid.uuid4().hex} | ({"Authorization": f"Bearer {token}"} if token else {})
        got = http_post(base + path, body, h)
        assert got[0] == status, (path, got)
        return got[1]

    def login(phone: str) -> dict:
        code = post("/v1/auth/otp", {"phone": phone}, status=202)["dev_code"]
        return post("/v1/auth/token", {"phone": phone, "code": code})

    owner = login(owner_phone)["access_token"]
    accountant_id = login(accountant_phone)["user_id"]
    first17 = "913501005" + owner_phone[-8:]  # a 统一社会信用代码 of its own per firm
    uscc = first17 + uscc_check_char(first17)
    firm = post(
        "/v1/firms",
        {
            "name": "回收有限公司",
            "uscc": uscc,
            "recycler_filing_no": "BA-1",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
        owner,
        201,
    )
    post(f"/v1/admin/verifications/firm/{firm['id']}/approve", {}, login("13900000001")["access_token"])
    post(f"/v1/firms/{firm['id']}/accountants", {"user_id": accountant_id}, owner, 201)
    token = login(accountant_phone)["access_token"]  # now with the accountant role for the firm
    job = post("/v1/tax/exports", {"period": "2026-11", "format": "csv", "firm_id": firm["id"]}, token, 202)
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v1/tax/exports/{job['id']}"
    # (a message lost on the way is sent again: the fixture sets a 20 s deadline, beat looks every 5 s)
    assert wait_until(lambda: http_get(url, auth)[1]["status"] == "done", 150, 0.3), http_get(url, auth)
    return job


def test_a_tax_export_is_run_by_the_platforms_worker_whatever_listens_on_amqp(embedded):
    """The gateway publishes the export task through the project's Celery app (the embedded SQLite broker), so
    the platform's worker runs it; Celery's default broker (AMQP on localhost:5672), free or taken, is never
    used. (Fix 1 of the reliability issue: the export stayed `queued` forever.)"""
    free = socket.socket().connect_ex(("127.0.0.1", 5672)) != 0
    if free:  # a host without AMQP: nothing listening there
        _export_through_the_api(embedded["gateway"], "13600000101", "13600000102")
    with amqp_port_taken():
        _export_through_the_api(embedded["gateway"], "13600000201", "13600000202")

    def ran() -> int:  # the worker logs success just after the job row says done
        return sum(
            1
            for ln in embedded["log"].read_text().splitlines()
            if "invoicing.export_tax_report[" in ln and "succeeded" in ln
        )

    assert wait_until(lambda: ran() >= (2 if free else 1), 10, 0.1), embedded["log"].read_text()[-3000:]
    assert "running it in a thread" not in embedded["log"].read_text()


def test_a_killed_background_process_is_started_again_and_readyz_names_it_meanwhile(embedded):
    """Fix 13: one child dying no longer takes the platform down; the supervisor starts it again."""
    base = embedded["gateway"]

    def background_pid() -> int | None:
        out = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(embedded["pid"])], capture_output=True, text=True
        ).stdout
        pids = [int(ln.split()[0]) for ln in out.splitlines() if ln.split()[-1] == "background"]
        return pids[0] if pids else None

    assert wait_until(lambda: background_pid() is not None, 60, 0.1)
    first = background_pid()
    os.kill(first, signal.SIGKILL)
    states: list[dict] = []
    assert wait_until(
        lambda: states.append(http_get(base + "/readyz"))
        or states[-1][1]["checks"].get("process:background") == "restarting",
        10,
        0.05,
    ), states[-1:]
    assert states[-1][0] == 503
    assert wait_until(lambda: background_pid() not in (None, first), 30, 0.1)
    assert wait_until(lambda: http_get(base + "/readyz")[0] == 200, 30, 0.2), http_get(base + "/readyz")
    assert http_get(base + "/healthz")[0] == 200  # the gateway never went down


def test_whole_trading_flow_in_the_embedded_run(embedded):
    """Two firms trade a lot from the seller's collectors' pickup to settlement, the close done by the embedded
    run's Celery beat and worker (SQLite broker), the trace reconciled and the tier-1 point in the price index."""
    whole_trading_flow(embedded["gateway"])
    failed = [
        ln
        for ln in embedded["log"].read_text().splitlines()
        if "trading.close_due_lots" in ln and ("raised" in ln or "Error" in ln)
    ]
    assert failed == [], failed
