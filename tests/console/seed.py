"""Data for the console's browser tests, put in through the public API of a running platform (as any client would).

Prices: three verified firms report quotes for 黄纸板 and 书本纸 in Beijing over the last six days; the admin runs
the daily computation for each day. One day the firms' quotes in 朝阳区 fall short of the quorum while Beijing as a
whole has enough, so 朝阳区's value that day is the province's (stale). A late report for another day, then a
recomputation, restates that day (version 2, with a correction notice).

Orders (`seed_orders`): two second-hand orders paid in the sandbox, one of them shipped after its authorisation
lapsed at the provider, so it waits for the buyer to pay again (the admin's 付款失败 list).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from services.kernel.checkdigits import uscc_check_char
from tests.e2e.flow import http_get, http_post, wait_until

SHANGHAI = timezone(timedelta(hours=8))
ADMIN_PHONE = "13900000001"
CITY = "110105"  # 北京市朝阳区
OTHER_CITY = "110108"  # 北京市海淀区
DAYS = 6


class Api:
    def __init__(self, base: str):
        self.base = base

    def call(
        self, method: str, path: str, token: str | None = None, body: dict | None = None, status: int = 200
    ) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST":
            got = http_post(self.base + path, body or {}, headers | {"Idempotency-Key": uuid.uuid4().hex})
        else:
            got = http_get(self.base + path, headers)
        assert got[0] == status, (method, path, got)
        return got[1]

    def login(self, phone: str) -> dict:
        otp = self.call("POST", "/v1/auth/otp", body={"phone": phone}, status=202)
        return self.call("POST", "/v1/auth/token", body={"phone": phone, "code": otp["dev_code"]})


_uscc_seq = itertools.count(1)


def uscc() -> str:
    first17 = f"91110105MA{next(_uscc_seq):07d}"
    return first17 + uscc_check_char(first17)


def register_firm(api: Api, owner_phone: str, name: str) -> str:
    owner = api.login(owner_phone)["access_token"]
    firm = api.call(
        "POST",
        "/v1/firms",
        owner,
        {
            "name": name,
            "uscc": uscc(),
            "recycler_filing_no": f"BA-2026-{owner_phone[-4:]}",
            "address": "北京市朝阳区再生路1号",
            "city_code": CITY,
        },
        status=201,
    )
    return firm["id"]


@dataclass
class Prices:
    days: list[date]
    stale_day: date
    restated_day: date
    firm_tokens: list[str] = field(default_factory=list)
    firm_ids: list[str] = field(default_factory=list)
    firm_phones: list[str] = field(default_factory=list)


def seed_prices(api: Api, admin: str) -> Prices:
    firm_tokens, firm_ids, phones = [], [], []
    for k in range(3):
        phone = f"1360000000{k}"
        firm_id = register_firm(api, phone, f"京环再生资源{k + 1}号有限公司")
        firm_ids.append(firm_id)
        phones.append(phone)
        api.call("POST", f"/v1/admin/verifications/firm/{firm_id}/approve", admin)
        firm_tokens.append(
            api.login(phone)["access_token"]
        )  # a token issued after approval holds the firm role
    today = datetime.now(SHANGHAI).date()
    days = [today - timedelta(days=n) for n in range(DAYS, 0, -1)]
    stale_day, restated_day = days[2], days[4]

    def report(token: str, category: str, city: str, day: date, price_fen: int, qty: str = "100") -> None:
        api.call(
            "POST",
            "/v1/prices/observations",
            token,
            {
                "category": category,
                "city_code": city,
                "unit_price_fen": price_fen,
                "qty": qty,
                "kind": "quote",
                "observed_at": datetime.combine(day, datetime.min.time(), SHANGHAI)
                .replace(hour=11)
                .isoformat(),
            },
            status=201,
        )

    for n, day in enumerate(days):
        for k, token in enumerate(firm_tokens):
            for j in range(2):
                price = 150 + 3 * n + k + j
                # on the stale day one firm's quotes are in another district: 朝阳区 has 4 (< quorum 5)
                city = OTHER_CITY if (day == stale_day and k == 2) else CITY
                report(token, "paper.cardboard", city, day, price)
                report(token, "paper.books", CITY, day, 120 + 2 * n + k + j)
        api.call("POST", "/v1/admin/prices/compute", admin, {"date": day.isoformat()})
    # late data for a computed day: recomputing it publishes version 2 and a correction notice
    report(firm_tokens[0], "paper.cardboard", CITY, restated_day, 175, qty="300")
    out = api.call(
        "POST",
        "/v1/admin/prices/compute",
        admin,
        {"date": restated_day.isoformat(), "reason": "迟到数据补录"},
    )
    assert out["n_restated"] >= 1, out
    return Prices(days, stale_day, restated_day, firm_tokens, firm_ids, phones)


ACCOUNTANT_PHONE = "13500000001"


@dataclass
class Invoices:
    firm_id: str
    invoice: dict


def seed_invoices(api: Api) -> Invoices:
    """The whole pickup flow (a reverse invoice issued by a verified firm), and an accountant for that firm."""
    from tests.e2e.flow import whole_pickup_flow

    done = whole_pickup_flow(api.base)
    owner = api.login(done["owner_phone"])["access_token"]
    accountant = api.login(ACCOUNTANT_PHONE)["user_id"]
    api.call("POST", f"/v1/firms/{done['firm_id']}/accountants", owner, {"user_id": accountant}, status=201)
    return Invoices(done["firm_id"], done["invoice"])


@dataclass
class Orders:
    paid: str  # an order paid into the hold, not shipped
    failed: str  # a shipped order whose payment was let go before it reached escrow (payment_failed)
    seller_phone: str


def seed_orders(api: Api, data_dir: Path) -> Orders:
    """Two second-hand orders through the public API. For the second, the sandbox provider lets the buyer's
    authorisation lapse (what an issuer does on its own; `SandboxProvider.expire_authorisation`) just before the
    seller ships: the escrow capture fails and the shipped order waits for the buyer to pay again."""
    from sqlalchemy import select

    from services.kernel.settings import Settings
    from services.payments.adapters.sandbox import SandboxProvider, sbx_intents

    seller_phone = "13600007701"
    seller = api.login(seller_phone)["access_token"]
    buyer = api.login("13500007702")["access_token"]

    def paid_order(title: str) -> dict:
        body = {
            "title": title,
            "description": "九成新，无笔记",
            "category": "books.general",
            "condition": "like_new",
            "price_fen": 4500,
            "city_code": CITY,
        }
        listing = api.call("POST", "/v1/listings", seller, body, status=201)
        api.call("POST", f"/v1/listings/{listing['id']}/publish", seller)
        order = api.call("POST", "/v1/orders", buyer, {"listing_id": listing["id"]}, status=201)

        def view() -> dict:
            return api.call("GET", f"/v1/orders/{order['id']}", buyer)

        assert wait_until(lambda: view()["payment"]["status"] == "requires_payment_method", 30, 0.1), view()
        pay = {"payment_method": "pm_card_visa"}
        api.call("POST", f"/v1/payments/intents/{order['payment']['id']}/confirm", buyer, pay)
        assert wait_until(lambda: view()["status"] == "paid", 30, 0.1), view()
        return view()

    paid = paid_order("《活着》余华 作家出版社")
    failed = paid_order("《平凡的世界》路遥 全三册")
    sandbox = SandboxProvider.from_settings(Settings(data_dir=data_dir))
    try:
        with sandbox.db.session(readonly=True) as s:
            intent = s.execute(
                select(sbx_intents.c.id).where(sbx_intents.c.metadata.contains(failed["payment"]["id"]))
            ).scalar_one()
        sandbox.expire_authorisation(intent)
    finally:
        sandbox.close()
    api.call("POST", f"/v1/orders/{failed['id']}/ship", seller, {"carrier": "顺丰", "tracking_no": "SF7701"})
    assert wait_until(
        lambda: api.call("GET", f"/v1/orders/{failed['id']}", buyer)["payment"]["failure_reason"], 30, 0.1
    )
    return Orders(paid["id"], failed["id"], seller_phone)
