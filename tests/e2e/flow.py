"""Helpers for the end-to-end tests: plain HTTP against a running platform, and the whole pickup flow."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from services.kernel.outbox import wait_until


@contextlib.contextmanager
def platform_process(args: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    """`python -m workers.cli <args>` in its own process group, its output in `log_path`; the whole group is
    stopped (SIGTERM, then SIGKILL after 20 s) on exit."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except ProcessLookupError:  # the group is gone already (a test killed it)
                pass
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def log_tail(log_path: Path) -> str:
    return log_path.read_text()[-4000:]


# what in the caller's environment would point the embedded run at other databases, buses or brokers
NOT_EMBEDDED = (
    "DATABASE_URL",
    "EVENT_LOG_URL",
    "BUS",
    "SERVICES",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
)


@contextlib.contextmanager
def embedded_run(data_dir: Path, port: int, **env: str) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`recycle run` as its user starts it (the embedded default, ENV=dev) in `data_dir` on `port`, with `env` on
    top, once it answers /healthz: its URL, its log (in `data_dir`) and its process. Stopped on exit."""
    run_env = dict(os.environ, DATA_DIR=str(data_dir), PORT=str(port), ENV="dev", **env)
    for name in NOT_EMBEDDED:
        run_env.pop(name, None)
    base = f"http://127.0.0.1:{port}"
    log = data_dir / "platform.log"
    with platform_process(["run"], run_env, log) as proc:

        def up() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return http_get(base + "/healthz")[0] == 200
            except OSError:
                return False

        if not wait_until(up, timeout_s=120, interval_s=0.2) or proc.poll() is not None:
            raise AssertionError("recycle run did not start:\n" + log_tail(log))
        yield base, log, proc


# a date and time with no offset after it: never in a reply (RFC 3339 wants one)
_NAIVE_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d+)?)?")


def _reply(url: str, raw: bytes) -> dict:
    body = json.loads(raw or b"{}")

    def walk(v: object, where: str) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                walk(x, f"{where}.{k}")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                walk(x, f"{where}[{i}]")
        elif isinstance(v, str):
            assert not _NAIVE_TIMESTAMP.fullmatch(v), f"{url}: {where} = {v!r} has no UTC offset"

    walk(body, "$")
    return body


def http_get(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, _reply(url, r.read())
    except urllib.error.HTTPError as e:
        return e.code, _reply(url, e.read())


def http_post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, _reply(url, r.read())
    except urllib.error.HTTPError as e:
        return e.code, _reply(url, e.read())


class FlowClient:
    """The public API of a running platform as a flow drives it: each POST with an Idempotency-Key of its own
    (`<key_prefix>-<n>`), each reply's status checked (`status=None`: the status is returned as `_status`)."""

    def __init__(self, base: str, key_prefix: str) -> None:
        self.base, self.key_prefix, self.posts = base, key_prefix, 0

    def __call__(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict | None = None,
        status: int | None = 200,
    ) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST":
            self.posts += 1
            key = f"{self.key_prefix}-{self.posts}"
            got = http_post(self.base + path, body or {}, headers | {"Idempotency-Key": key})
        else:
            got = http_get(self.base + path, headers)
        if status is None:
            return {"_status": got[0], **got[1]}
        assert got[0] == status, (method, path, got)
        return got[1]

    def login(self, phone: str) -> dict:
        """Sign in with the dev OTP code: the token reply."""
        otp = self("POST", "/v1/auth/otp", body={"phone": phone}, status=202)
        return self("POST", "/v1/auth/token", body={"phone": phone, "code": otp["dev_code"]})


def whole_pickup_flow(base: str) -> dict:
    """Resident and collector through the whole flow on the public API of a running platform (admin phone
    13900000001): the firm and collector are verified (accounts → booking by event), the pickup is booked,
    grabbed, weighed and settled, invoicing issues the reverse invoice and payments pays the net.
    Returns the firm's id and its owner's phone, the pickup and its invoice."""
    from tests.booking.support import HOME, booking_body

    call = FlowClient(base, "flow")
    login = call.login

    admin = login("13900000001")["access_token"]
    resident = login("13700001111")["access_token"]
    owner = login("13800138000")["access_token"]
    firm = call(
        "POST",
        "/v1/firms",
        owner,
        {
            "name": "绿色再生资源回收有限公司",
            "uscc": "91350100M000100Y43",
            "recycler_filing_no": "BA-2024-0001",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
        status=201,
    )
    call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
    qual = call(
        "POST",
        f"/v1/firms/{firm['id']}/qualifications",
        owner,
        {"kind": "recycler_filing", "number": "BA-2024-0001", "valid_until": "2099-12-31"},
        status=201,
    )
    call("POST", f"/v1/admin/verifications/qualification/{qual['id']}/approve", admin)
    call("POST", "/v1/me/identity", resident, {"real_name": "张三", "id_number": "11010519491231002X"})
    call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    applicant = login("15011112222")["access_token"]
    col = call(
        "POST",
        "/v1/collectors",
        applicant,
        {
            "real_name": "王五",
            "id_number": "44030519900101123X",
            "firm_id": firm["id"],
            "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
            "categories": ["paper.cardboard", "metal.copper"],
        },
        status=201,
    )
    call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = login("15011112222")["access_token"]

    pid = call("POST", "/v1/pickups", resident, booking_body(), status=201)["id"]
    # booking learns of the verified collector from accounts' event, over Kafka (403 until then)
    jobs: list = []

    def listed() -> bool:
        jobs[:] = [http_get(base + "/v1/jobs", {"Authorization": f"Bearer {collector}"})]
        return any(j["id"] == pid for j in jobs[0][1].get("items", []))

    assert wait_until(listed, 60, 0.3), jobs  # the last reply says why (403: not yet known; 429; 5xx)
    assert call("POST", f"/v1/jobs/{pid}/accept", collector)["collector_id"] == col["id"]
    call("POST", f"/v1/pickups/{pid}/arrive", collector)
    weighed = call(
        "POST",
        f"/v1/pickups/{pid}/weigh",
        collector,
        {
            "lines": [
                {"category": "paper.cardboard", "qty": "13.2"},
                {"category": "metal.copper", "qty": "1.25"},
            ]
        },
    )
    total = weighed["total_fen"]
    call("POST", f"/v1/pickups/{pid}/settle", resident)

    def paid() -> bool:
        view = call("GET", f"/v1/pickups/{pid}", resident)
        return (view.get("payout") or {}).get("status") == "paid"

    assert wait_until(paid, 90, 0.5), call("GET", f"/v1/pickups/{pid}", resident)
    view = call("GET", f"/v1/pickups/{pid}", resident)
    assert view["invoice"]["status"] == "issued"
    assert view["payout"]["amount_fen"] == total - view["withheld_fen"]
    invoices = (
        call("GET", "/v1/invoices?period=" + view["invoice"].get("issued_at", "")[:7], resident)
        if view["invoice"].get("issued_at")
        else call("GET", "/v1/invoices", resident)
    )
    assert [i["pickup_id"] for i in invoices["items"]] == [pid]
    assert invoices["items"][0]["total_fen"] == total
    return {
        "firm_id": firm["id"],
        "owner_phone": "13800138000",
        "pickup_id": pid,
        "invoice": invoices["items"][0],
    }


def whole_second_hand_flow(base: str) -> None:
    """二手 on the public API of a running platform: a seller lists and publishes a book, a buyer finds it with a
    two-character query, orders it, pays in the sandbox (escrow), the seller ships, the buyer confirms receipt and
    reviews, and the seller is paid the price less the platform fee (1 %)."""
    call = FlowClient(base, "second-hand")
    login = call.login

    seller_login, buyer = login("13600006666"), login("13500005555")["access_token"]
    seller = seller_login["access_token"]
    listing = call(
        "POST",
        "/v1/listings",
        seller,
        {
            "title": "《三体》全集 刘慈欣 九成新",
            "description": "三本一套，无笔记",
            "category": "books.general",
            "condition": "like_new",
            "price_fen": 4500,
            "city_code": "110105",
        },
        status=201,
    )
    assert call("POST", f"/v1/listings/{listing['id']}/publish", seller)["status"] == "published"

    def found() -> bool:
        got = http_get(base + "/v1/listings/search?q=" + urllib.parse.quote("三体"))[1]
        return [i["id"] for i in got.get("items", [])] == [listing["id"]]

    assert wait_until(found, 30, 0.1)
    order = call("POST", "/v1/orders", buyer, {"listing_id": listing["id"]}, status=201)
    assert order["status"] == "pending_payment" and order["amount_fen"] == 4500

    def order_view() -> dict:
        return call("GET", f"/v1/orders/{order['id']}", buyer)

    assert wait_until(lambda: order_view()["payment"]["status"] == "requires_payment_method", 30, 0.1)
    paid = call(
        "POST",
        f"/v1/payments/intents/{order['payment']['id']}/confirm",
        buyer,
        {"payment_method": "pm_card_visa"},
    )
    assert paid["status"] == "requires_capture"
    assert wait_until(lambda: order_view()["status"] == "paid", 30, 0.1), order_view()
    call("POST", f"/v1/orders/{order['id']}/ship", seller, {"carrier": "顺丰", "tracking_no": "SF1234567890"})
    # as the README: the money is captured into escrow first (until then a confirmation is 409)
    assert wait_until(lambda: order_view()["payment"]["status"] == "escrowed", 30, 0.1), order_view()
    assert call("POST", f"/v1/orders/{order['id']}/confirm-receipt", buyer)["status"] == "completed"
    assert wait_until(lambda: order_view()["payment"]["status"] == "captured", 30, 0.1), order_view()
    call("POST", f"/v1/orders/{order['id']}/review", buyer, {"rating": 5, "comment": "书很新"}, status=201)
    rep = call("GET", f"/v1/users/{seller_login['user_id']}/reputation")
    assert rep["score"] == 5.0 and rep["completed_orders"] == 1

    def seller_paid() -> bool:
        items = call("GET", "/v1/payments/withdrawals", seller)["items"]
        return [(w["amount_fen"], w["status"]) for w in items] == [(4455, "paid")]

    assert wait_until(seller_paid, 30, 0.2), call("GET", "/v1/payments/withdrawals", seller)


def whole_trading_flow(base: str, *, lot_runs_s: float = 8.0) -> dict:
    """B2B scrap trading on the public API of a running platform whose closing job is the real scheduled one
    (TRADING_CLOSE_INTERVAL_S short, TRADING_MIN_DURATION_S below `lot_runs_s`): two firms are verified; the
    seller's collector settles a pickup of steel, which becomes the seller's intake; the seller lists a sealed lot
    ending `lot_runs_s` ahead; the other firm pays a deposit (a hold through payments) and bids; the beat job closes
    the lot; the seller delivers on the weighbridge ticket; the buyer pays; the trade settles, the deposit goes
    back, the price index records the tier-1 transaction, and the trace links the pickup → lot → trade → delivery
    with quantities that reconcile. Returns the ids."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from tests.booking.support import HOME, booking_body, window

    call = FlowClient(base, "trading")

    def login(phone: str) -> str:
        return call.login(phone)["access_token"]

    def eventually(what: Callable[[], dict], ok: Callable[[dict], bool], timeout_s: float = 60) -> dict:
        got: list[dict] = [{}]

        def check() -> bool:
            got[0] = what()
            return ok(got[0])

        assert wait_until(check, timeout_s, 0.2), got[0]
        return got[0]

    admin, resident = login("13900000001"), login("13700003333")
    firms = {}
    for phone, name, uscc, city in (
        ("13800000021", "城东再生资源回收有限公司", "91110105MA00000012", "110105"),
        ("13800000022", "华北钢铁炉料有限公司", "91130200MA00000017", "130203"),
    ):
        firm = call(
            "POST",
            "/v1/firms",
            login(phone),
            {
                "name": name,
                "uscc": uscc,
                "recycler_filing_no": f"BA-2024-{phone[-4:]}",
                "address": "某路1号",
                "city_code": city,
            },
            status=201,
        )
        call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
        firms[phone] = firm["id"]
    seller, buyer = login("13800000021"), login("13800000022")  # fresh tokens carry the firm role

    # the seller's intake: its collector settles a pickup of 5,000 kg of steel
    call("POST", "/v1/me/identity", resident, {"real_name": "李四", "id_number": "110105198002020312"})
    call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    col = call(
        "POST",
        "/v1/collectors",
        login("15011113333"),
        {
            "real_name": "赵六",
            "id_number": "44030519850303041X",
            "firm_id": firms["13800000021"],
            "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
            "categories": ["metal.steel"],
        },
        status=201,
    )
    call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = login("15011113333")
    slot = window(datetime.now(ZoneInfo("Asia/Shanghai")).date() + timedelta(days=2))
    pid = call(
        "POST",
        "/v1/pickups",
        resident,
        booking_body(items=[{"category": "metal.steel", "est_qty": "5000"}], win=slot),
        status=201,
    )["id"]
    eventually(  # booking learns of the verified collector from accounts, over the bus
        lambda: call("GET", "/v1/jobs", collector, status=None),  # 403 until then
        lambda page: any(j["id"] == pid for j in page.get("items", [])),
    )
    call("POST", f"/v1/jobs/{pid}/accept", collector)
    call("POST", f"/v1/pickups/{pid}/arrive", collector)
    call(
        "POST", f"/v1/pickups/{pid}/weigh", collector, {"lines": [{"category": "metal.steel", "qty": "5000"}]}
    )
    call("POST", f"/v1/pickups/{pid}/settle", resident)

    # the seller lists 4.8 t once its intake has come over the bus (until then: 422 exceeds_intake)
    def lot_body() -> dict:  # its end counted from each try: the wait may outlast a fixed one (then 400)
        return {
            "category": "metal.steel",
            "grade": "重废 HMS1",
            "qty_t": "4.800",
            "city_code": "110105",
            "reserve_price_fen_per_t": 250_000,
            "auction": "sealed",
            "deposit_fen": 50_000,
            "ends_at": (datetime.now(UTC) + timedelta(seconds=lot_runs_s)).isoformat(),
        }

    listed = eventually(
        lambda: call("POST", "/v1/lots", seller, lot_body(), status=None), lambda r: r["_status"] == 201
    )
    lot = listed["id"]

    # the buyer's deposit: a hold through payments, paid with a test card; then its sealed bid
    pay = call("POST", f"/v1/lots/{lot}/deposit", buyer, {}, status=202)["payment_id"]
    eventually(  # payments opens the intent once it has the hold request (over the bus)
        lambda: call(
            "POST",
            f"/v1/payments/intents/{pay}/confirm",
            buyer,
            {"payment_method": "pm_card_visa"},
            status=None,
        ),
        lambda r: r["_status"] == 200,
    )
    eventually(lambda: call("GET", f"/v1/lots/{lot}/deposit", buyer), lambda d: d["status"] == "held")
    own = call("POST", f"/v1/lots/{lot}/bids", seller, {"price_fen_per_t": 300_000}, status=422)
    assert own["reason"] == "own_lot"
    bid = call("POST", f"/v1/lots/{lot}/bids", buyer, {"price_fen_per_t": 262_000}, status=201)
    assert datetime.now(UTC) < datetime.fromisoformat(bid["lot_ends_at"]), "the lot ran out before the bid"

    # the scheduled closing job (Celery beat → worker) awards the lot after its end time
    closed = eventually(
        lambda: call("GET", f"/v1/lots/{lot}", buyer), lambda v: v["status"] != "open", lot_runs_s + 60
    )
    assert closed["status"] == "awarded" and closed["best_price_fen_per_t"] == 262_000, closed
    trade = closed["trade_id"]
    assert call("GET", f"/v1/trades/{trade}", seller)["buyer_firm_id"] == firms["13800000022"]

    # delivery on the weighbridge ticket (+1.25 %: within the tolerance), the buyer pays, the trade settles
    out = call(
        "POST",
        f"/v1/trades/{trade}/delivery",
        seller,
        {"weighbridge_ticket_no": "BJ-2026-000777", "delivered_qty_t": "4.860"},
    )
    assert (out["status"], out["amount_fen"], out["delivery"]["fee_fen"]) == ("delivered", 1_273_320, 6367)
    eventually(
        lambda: call(
            "POST",
            f"/v1/payments/intents/hr_{trade}/confirm",
            buyer,
            {"payment_method": "pm_card_visa"},
            status=None,
        ),
        lambda r: r["_status"] == 200,
    )
    settled = eventually(
        lambda: call("GET", f"/v1/trades/{trade}", seller), lambda t: t["status"] == "settled"
    )
    assert settled["settlement"]["seller_receives_fen"] == 1_273_320 - 6367
    eventually(lambda: call("GET", f"/v1/lots/{lot}/deposit", buyer), lambda d: d["status"] == "released")

    # the price index has the trade as a tier-1 transaction of today (pricing consumed TradeSettled)
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    q = f"/v1/admin/prices/inputs?date={today}&category=metal.steel&city_code=110105&tier=transaction&limit=1000"
    inputs = eventually(
        lambda: call("GET", q, admin),
        lambda page: any(i["source"] == "trading.trade" for i in page["items"]),
    )
    (point,) = [i for i in inputs["items"] if i["source"] == "trading.trade"]
    assert (point["unit_price_fen"], point["qty"], point["kind"], point["related_party"]) == (
        262,
        "4860.000",
        "trade",
        False,
    )

    # the trace: pickup → lot → trade → delivery, the quantities reconciled
    tr = call("GET", f"/v1/lots/{lot}/trace", buyer)
    assert [(x["pickup_id"], x["pickup_qty_t"], x["used_qty_t"]) for x in tr["intake"]] == [
        (pid, "5.000", "4.800")
    ]
    assert (tr["trade"]["id"], tr["trade"]["status"], tr["delivery"]["weighbridge_ticket_no"]) == (
        trade,
        "settled",
        "BJ-2026-000777",
    )
    assert tr["reconciliation"] == {
        "lot_qty_t": "4.800",
        "from_intake_t": "4.800",
        "from_purchase_t": "0.000",
        "delivered_qty_t": "4.860",
        "covered": True,
        "delivery_within_tolerance_or_accepted": True,
        "reconciles": True,
    }
    return {"lot_id": lot, "trade_id": trade, "pickup_id": pid, "firms": firms}


def readme_wipe_to_phone_listing_flow(base: str, admin_phone: str) -> None:
    """The README's data-wipe walk-through, then its phone listing: the admin registers an erasure tool's Ed25519
    key and gives an operator the role; the operator submits the tool's signed report (the same report again:
    the same certificate); anyone reads the certificate, masked, and its page; a seller's phone listing without a
    certificate for its IMEI stays a draft, with one it publishes and a two-character query finds it."""
    import base64
    from datetime import UTC, datetime

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    n = [0]

    def call(
        method: str, path: str, token: str | None = None, body: dict | None = None, status: int = 200
    ) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST":
            n[0] += 1
            got = http_post(base + path, body or {}, headers | {"Idempotency-Key": f"wipe-{n[0]}"})
        else:
            got = http_get(base + path, headers)
        assert got[0] == status, (method, path, got)
        return got[1]

    def login(phone: str) -> dict:
        otp = call("POST", "/v1/auth/otp", body={"phone": phone}, status=202)
        return call("POST", "/v1/auth/token", body={"phone": phone, "code": otp["dev_code"]})

    admin = login(admin_phone)["access_token"]
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    tool = call(
        "POST",
        "/v1/wipe/tools",
        admin,
        {"name": "擦除站 1", "public_key": base64.b64encode(raw).decode()},
        201,
    )
    operator_id = login("13700007777")["user_id"]
    call("POST", f"/v1/admin/users/{operator_id}/roles", admin, {"roles": ["erasure_operator"]})
    operator = login("13700007777")["access_token"]  # a fresh token carries the role
    imei = "868912345678905"
    report = json.dumps(
        {
            "schema": "wipe-report/1",
            "report_id": "demo-1",
            "created_at": datetime.now(UTC).isoformat(),
            "activation_lock": "off",
            "device": {"kind": "phone", "make": "Huawei", "model": "Mate 40", "imei": imei},
            "media": [
                {
                    "type": "ufs",
                    "serial": "UFS0001",
                    "capacity_bytes": 128000000000,
                    "bytes_erased": 128000000000,
                    "hidden_areas": "not_supported",
                    "method": "crypto_erase",
                    "passes": 1,
                    "random_passes": 0,
                    "erase_result": "passed",
                    "verification": {"mode": "full", "result": "passed"},
                }
            ],
        }
    )
    submission = {
        "tool_id": tool["id"],
        "format": "json",
        "report": report,
        "signature": base64.b64encode(key.sign(report.encode())).decode(),
    }
    seller = login("13600008888")["access_token"]
    phone = {
        "title": "华为 Mate 40 手机 128G 九成新",
        "description": "已做数据清除",
        "category": "electronics.phone",
        "condition": "good",
        "price_fen": 150000,
        "city_code": "110105",
        "device": {"kind": "phone", "imei": imei},
    }
    early = call("POST", "/v1/listings", seller, phone, status=201)
    refused = call("POST", f"/v1/listings/{early['id']}/publish", seller, status=422)
    assert refused["reason"] == "wipe_certificate_required", refused

    cert = call("POST", "/v1/wipe/reports", operator, submission, status=201)
    assert cert["status"] == "verified" and cert["certificate_id"].startswith("wc_")
    assert (
        call("POST", "/v1/wipe/reports", operator, submission) == cert
    )  # the same report: the same certificate
    view = call("GET", f"/v1/wipe/certificates/{cert['certificate_id']}")
    assert view["valid"] is True and view["device"]["imei_masked"] == "868********8905"
    assert imei not in json.dumps(view)
    with urllib.request.urlopen(
        f"{base}/v1/wipe/certificates/{cert['certificate_id']}/page", timeout=10
    ) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/html")

    # listings learns of the certificate from wipe's event: the phone publishes once it has
    listing = call("POST", "/v1/listings", seller, phone, status=201)
    published: list = []

    def publish() -> bool:
        n[0] += 1
        published[:] = [
            http_post(
                f"{base}/v1/listings/{listing['id']}/publish",
                {},
                {"Authorization": f"Bearer {seller}", "Idempotency-Key": f"wipe-{n[0]}"},
            )
        ]
        return published[0][0] == 200

    assert wait_until(publish, 30, 0.2), published
    assert published[0][1]["status"] == "published"

    def found() -> bool:
        got = http_get(base + "/v1/listings/search?q=" + urllib.parse.quote("手机"))[1]
        return listing["id"] in [i["id"] for i in got.get("items", [])]

    assert wait_until(found, 30, 0.1)
