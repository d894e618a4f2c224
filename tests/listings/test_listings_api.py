"""Listings on the public API: drafts, the prohibited-items rule, the wipe-certificate gate on publishing (with
listings' own copy of certificates from the wipe service's events), revocation, search through the indexer."""

from __future__ import annotations

import base64
import gc

from services.contracts.wipe import device_key

from .support import CITY, app_client, auth, book_body, certify, imei, phone_body, revoke, uid

IMEI = imei("86891503123456")


async def search(client, **params) -> dict:  # noqa: ANN001
    r = await client.get("/v1/listings/search", params=params)
    assert r.status == 200, await r.text()
    return await r.json()


async def test_a_book_is_listed_published_and_found_by_a_two_character_query(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    seller = uid("sel")
    h = auth(sqlite_settings, seller)
    r = await client.post("/v1/listings", json=book_body(), headers=h)
    assert r.status == 201, await r.text()
    draft = await r.json()
    assert draft["status"] == "draft" and draft["seller_id"] == seller and draft["price_fen"] == 4500
    # a draft is not on the market: others do not see it, search does not find it
    assert (
        await client.get(f"/v1/listings/{draft['id']}", headers=auth(sqlite_settings, uid()))
    ).status == 404
    platform.drain()
    assert (await search(client, q="三体"))["total"] == 0

    r = await client.post(f"/v1/listings/{draft['id']}/publish", headers=h)
    assert r.status == 200, await r.text()
    assert (await r.json())["status"] == "published"
    platform.drain()  # outbox → bus → indexer
    found = await search(client, q="三体")
    assert [i["id"] for i in found["items"]] == [draft["id"]]
    assert found["total"] == 1 and found["facets"]["category"] == {"books.general": 1}
    assert found["scored_hits"] is None  # every hit ranked by BM25
    assert gc.get_freeze_count() > 0  # the gateway keeps what it loaded out of full collections (settle_heap)
    assert found["facets"]["city_code"] == {CITY: 1} and found["facets"]["condition"] == {"like_new": 1}
    assert (await search(client, q="书"))["total"] == 0  # 书 is not in this title or description
    assert (await search(client, q="刘慈欣 三体"))["total"] == 1  # several words are AND
    assert (await search(client, q="刘慈欣 手机"))["total"] == 0
    # anyone can read a published listing
    r = await client.get(f"/v1/listings/{draft['id']}")
    assert r.status == 200 and (await r.json())["status"] == "published"

    # the seller lowers the price: the index follows
    r = await client.patch(f"/v1/listings/{draft['id']}", json={"price_fen": 3900}, headers=h)
    assert r.status == 200 and (await r.json())["price_fen"] == 3900
    platform.drain()
    assert (await search(client, q="三体", max_price_fen=4000))["total"] == 1
    # only the seller may change it
    r = await client.patch(
        f"/v1/listings/{draft['id']}", json={"price_fen": 1}, headers=auth(sqlite_settings, uid())
    )
    assert r.status == 403
    # withdrawn: gone from search
    r = await client.post(f"/v1/listings/{draft['id']}/withdraw", headers=h)
    assert r.status == 200 and (await r.json())["status"] == "withdrawn"
    platform.drain()
    assert (await search(client, q="三体"))["total"] == 0
    r = await client.post(f"/v1/listings/{draft['id']}/publish", headers=h)
    assert r.status == 409 and (await r.json())["current_state"] == "withdrawn"
    # the price it has already is no change, even now that it cannot be edited (a save sent again): the listing
    # as it is, the same version; a new price is refused
    withdrawn = await (await client.get(f"/v1/listings/{draft['id']}", headers=h)).json()
    r = await client.patch(f"/v1/listings/{draft['id']}", json={"price_fen": 3900}, headers=h)
    assert r.status == 200 and await r.json() == withdrawn
    r = await client.patch(f"/v1/listings/{draft['id']}", json={"price_fen": 3800}, headers=h)
    assert r.status == 409 and (await r.json())["current_state"] == "withdrawn"


async def test_bad_input_names_the_field(aiohttp_client, sqlite_settings):
    _, client = await app_client(aiohttp_client, sqlite_settings)
    h = auth(sqlite_settings, uid())
    bad_imei = IMEI[:-1] + str((int(IMEI[-1]) + 1) % 10)
    cases = [
        (phone_body(bad_imei), "device.imei"),
        (book_body(category="nope.nothing"), "category"),
        (book_body(city_code="999999"), "city_code"),
        (book_body(condition="mint"), "condition"),
        (book_body(price_fen=0), "price_fen"),
        (book_body(images=["ftp://x"]), "images"),
        (book_body(images=["https://"]), "images"),  # no host (found on the embedded run)
        (book_body(images=["https://img.example.cn/a b.jpg"]), "images"),
        (book_body(images=["https://img.example.cn/a.jpg", "http:///a.jpg"]), "images"),
        (phone_body(IMEI, device={"kind": "phone"}), "device"),
    ]
    for body, field in cases:
        r = await client.post("/v1/listings", json=body, headers=h)
        assert r.status == 400, (field, await r.text())
        problem = await r.json()
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert any(e["field"] == field for e in problem["errors"]), (field, problem)
    assert (await client.post("/v1/listings", json=book_body())).status == 401


async def test_prohibited_items_are_refused(aiohttp_client, sqlite_settings):
    _, client = await app_client(aiohttp_client, sqlite_settings)
    h = auth(sqlite_settings, uid())
    for body in (
        book_body(title="仿真枪 玩具 成人"),
        book_body(description="出 高 仿 名牌包"),
        book_body(title="全国公民信息 数据包"),
        book_body(
            title="仿\u200b真\u2060枪 玩具"
        ),  # invisible characters between (found on the embedded run)
        book_body(description="出 高.仿 名牌包"),
        book_body(title="闲置电池一堆", category="hazardous.battery"),
    ):
        r = await client.post("/v1/listings", json=body, headers=h)
        assert r.status == 422, await r.text()
        assert (await r.json())["reason"] == "prohibited_item"
    # a prohibited word cannot come in through an update either
    r = await client.post("/v1/listings", json=book_body(), headers=h)
    lid = (await r.json())["id"]
    r = await client.patch(f"/v1/listings/{lid}", json={"description": "另有冰毒出售"}, headers=h)
    assert r.status == 422 and (await r.json())["reason"] == "prohibited_item"


async def test_a_phone_needs_a_wipe_certificate_and_a_revoked_one_unpublishes_it(
    aiohttp_client, sqlite_settings
):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    seller = uid("sel")
    h = auth(sqlite_settings, seller)
    r = await client.post("/v1/listings", json=phone_body(IMEI), headers=h)
    assert r.status == 201, await r.text()
    phone = await r.json()
    assert phone["device"] == {
        "kind": "phone",
        "imei_masked": IMEI[:3] + "********" + IMEI[-4:],  # as the wipe service shows it (kernel.pii)
        "serial_masked": None,
    }
    assert IMEI not in await r.text()  # the IMEI is kept encrypted and shown masked

    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"
    # a certificate for another device does not help
    certify(platform, imei_value=imei("35209900176148"))
    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"
    # a phone-category listing without a device named cannot be published either
    r = await client.post("/v1/listings", json=phone_body(IMEI, device=None), headers=h)
    bare = await r.json()
    r = await client.post(f"/v1/listings/{bare['id']}/publish", headers=h)
    assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"

    cid = certify(platform, imei_value=IMEI)
    certify(platform, imei_value=IMEI, certificate_id=cid)  # a redelivered copy changes nothing
    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 200, await r.text()
    platform.drain()
    got = await (await client.get(f"/v1/listings/{phone['id']}")).json()
    assert got["certificate_id"] == cid
    found = await (await client.get("/v1/listings/search", params={"q": "华为 手机"})).json()
    assert [i["id"] for i in found["items"]] == [phone["id"]]
    # two characters find it too, and a model number
    assert (await (await client.get("/v1/listings/search", params={"q": "华为"})).json())["total"] == 1
    assert (await (await client.get("/v1/listings/search", params={"q": "mate40"})).json())["total"] == 1

    revoke(platform, cid, [device_key("imei", IMEI)])
    got = await (await client.get(f"/v1/listings/{phone['id']}", headers=h)).json()
    assert got["status"] == "draft" and got["unpublished_reason"] == "certificate_revoked"
    assert got["certificate_id"] is None
    assert (await (await client.get("/v1/listings/search", params={"q": "华为"})).json())["total"] == 0
    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 422 and (await r.json())["reason"] == "wipe_certificate_required"
    # a re-erased device gets a new certificate; a late copy of the old issue does not undo the revocation
    certify(platform, imei_value=IMEI, certificate_id=cid)
    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 422
    new = certify(platform, imei_value=IMEI)
    r = await client.post(f"/v1/listings/{phone['id']}/publish", headers=h)
    assert r.status == 200
    assert (await (await client.get(f"/v1/listings/{phone['id']}")).json())["certificate_id"] == new


async def test_a_revocation_keeps_listings_another_certificate_covers(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    h = auth(sqlite_settings, uid())
    serial = "C02XK1ABJG5H"
    first = certify(platform, serial=serial, kind="computer")
    r = await client.post(
        "/v1/listings",
        headers=h,
        json=phone_body(
            IMEI,
            title="MacBook Pro 2019 13寸 i5 16G",
            category="electronics.computer",
            device={"kind": "laptop", "serial": serial},
        ),
    )
    lid = (await r.json())["id"]
    assert (await client.post(f"/v1/listings/{lid}/publish", headers=h)).status == 200
    second = certify(platform, serial=serial.lower(), kind="computer")  # the digest folds case
    revoke(platform, first, [device_key("serial", serial)])
    got = await (await client.get(f"/v1/listings/{lid}")).json()
    assert got["status"] == "published" and got["certificate_id"] == second


async def test_categories_and_ownership(aiohttp_client, sqlite_settings):
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    cats = await (await client.get("/v1/listings/categories")).json()
    by_code = {c["code"]: c for c in cats}
    assert by_code["electronics.phone"]["holds_storage"] and not by_code["books.general"]["holds_storage"]
    assert "hazardous.battery" not in by_code  # prohibited
    seller, other = uid("sel"), uid("oth")
    r = await client.post("/v1/listings", json=book_body(), headers=auth(sqlite_settings, seller))
    lid = (await r.json())["id"]
    r = await client.post(f"/v1/listings/{lid}/publish", headers=auth(sqlite_settings, other))
    assert r.status == 404  # someone else's draft does not exist for you
    assert (
        await client.post(f"/v1/listings/{lid}/publish", headers=auth(sqlite_settings, seller))
    ).status == 200
    r = await client.post(f"/v1/listings/{lid}/withdraw", headers=auth(sqlite_settings, other))
    assert r.status == 403 and (await r.json())["reason"] == "not_owner"
    r = await client.post(f"/v1/listings/{lid}/withdraw", headers=auth(sqlite_settings, uid("adm"), "admin"))
    assert r.status == 200
    mine = await (await client.get("/v1/listings", headers=auth(sqlite_settings, seller))).json()
    assert [i["id"] for i in mine["items"]] == [lid]


async def test_out_of_range_search_and_list_parameters_are_400_naming_the_field(
    aiohttp_client, sqlite_settings
):
    """Found on the embedded run: a price filter past SQLite's integers, or a forged cursor of a huge offset,
    answered 500; min above max named `body`; an unknown category found nothing with 200."""
    _, client = await app_client(aiohttp_client, sqlite_settings)
    forged = base64.urlsafe_b64encode(b"o:" + b"9" * 30).decode().rstrip("=")
    h, admin = auth(sqlite_settings, uid()), auth(sqlite_settings, uid("adm"), "admin")
    cases = [
        ("/v1/listings/search", {"min_price_fen": str(10**19)}, "min_price_fen", {}),
        ("/v1/listings/search", {"max_price_fen": "9" * 30}, "max_price_fen", {}),
        ("/v1/listings/search", {"q": "三体", "max_price_fen": str(2**63)}, "max_price_fen", {}),
        ("/v1/listings/search", {"min_price_fen": "10", "max_price_fen": "5"}, "max_price_fen", {}),
        ("/v1/listings/search", {"cursor": forged}, "cursor", {}),
        ("/v1/listings/search", {"q": "三体", "cursor": forged}, "cursor", {}),
        ("/v1/listings/search", {"category": "nope"}, "category", {}),
        ("/v1/listings/search", {"category": "books.nope"}, "category", {}),
        ("/v1/listings/search", {"category": "book"}, "category", {}),  # not a family: books
        ("/v1/listings", {"cursor": forged}, "cursor", h),
        ("/v1/orders", {"cursor": forged}, "cursor", h),
        ("/v1/admin/orders", {"cursor": forged}, "cursor", admin),
    ]
    for path, params, field, headers in cases:
        r = await client.get(path, params=params, headers=headers)
        assert r.status == 400, (path, params, r.status, await r.text())
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert [e["field"] for e in (await r.json())["errors"]] == [field], (params, await r.text())
    # in range: answered
    for params in (
        {"max_price_fen": str(2**53 - 1)},
        {"min_price_fen": "5", "max_price_fen": "5"},
        {"category": "books"},
        {"category": "books.general"},
        {"cursor": base64.urlsafe_b64encode(b"o:40").decode().rstrip("=")},
    ):
        r = await client.get("/v1/listings/search", params=params)
        assert r.status == 200, (params, await r.text())


async def test_a_null_in_a_listing_update_is_refused_not_ignored(aiohttp_client, sqlite_settings):
    _, client = await app_client(aiohttp_client, sqlite_settings)
    h = auth(sqlite_settings, uid())
    lid = (await (await client.post("/v1/listings", json=book_body(), headers=h)).json())["id"]
    for body, field in (
        ({"price_fen": None}, "price_fen"),
        ({"description": None, "price_fen": 3900}, "description"),
    ):
        r = await client.patch(f"/v1/listings/{lid}", json=body, headers=h)
        assert r.status == 400, await r.text()
        assert [e["field"] for e in (await r.json())["errors"]] == [field]
    got = await (await client.get(f"/v1/listings/{lid}", headers=h)).json()
    assert (got["price_fen"], got["version"]) == (4500, 1)  # nothing written
    r = await client.patch(f"/v1/listings/{lid}", json={"price_fen": 3900}, headers=h)
    assert r.status == 200 and (await r.json())["price_fen"] == 3900


async def test_a_deployments_own_categories_file_decides_what_may_be_listed(
    aiohttp_client, sqlite_settings, tmp_path
):
    """`LISTINGS_CATEGORIES_FILE`: listings were checked against the shipped file whatever it said (a
    deployment's own code refused as unknown, a code it dropped accepted)."""
    own = tmp_path / "categories.toml"
    own.write_text(
        '[categories."tools.power"]\nname = "电动工具"\n\n'
        '[categories."electronics.phone"]\nname = "手机"\nholds_storage = true\n'
    )
    platform, client = await app_client(aiohttp_client, sqlite_settings, categories_file=str(own))
    assert [c["code"] for c in await (await client.get("/v1/listings/categories")).json()] == [
        "tools.power",
        "electronics.phone",
    ]
    h = auth(sqlite_settings, uid())
    r = await client.post(
        "/v1/listings", json=book_body(title="博世 电钻 九成新", category="tools.power"), headers=h
    )
    assert r.status == 201, await r.text()
    lid = (await r.json())["id"]
    r = await client.post("/v1/listings", json=book_body(), headers=h)  # books.general: not this deployment's
    assert r.status == 400 and [e["field"] for e in (await r.json())["errors"]] == ["category"]
    assert (await client.post(f"/v1/listings/{lid}/publish", headers=h)).status == 200
    platform.drain()
    found = await search(client, q="电钻", category="tools")
    assert [i["id"] for i in found["items"]] == [lid]
    r = await client.get("/v1/listings/search", params={"category": "books"})
    assert r.status == 400


async def test_the_search_page_size_is_bounded_by_its_setting(aiohttp_client, sqlite_settings):
    """LISTINGS_SEARCH_MAX_LIMIT was read but never used (the route had 100 written in)."""
    _, client = await app_client(aiohttp_client, sqlite_settings, search_max_limit=5)
    r = await client.get("/v1/listings/search", params={"limit": "6"})
    assert r.status == 400 and [e["field"] for e in (await r.json())["errors"]] == ["limit"]
    assert (await client.get("/v1/listings/search", params={"limit": "5"})).status == 200
    _, client = await app_client(aiohttp_client, sqlite_settings, search_max_limit=200)
    assert (await client.get("/v1/listings/search", params={"limit": "150"})).status == 200


async def test_one_device_is_on_sale_in_one_listing_at_a_time(aiohttp_client, sqlite_settings):
    """Found on the embedded run: two sellers published the same certified phone (its IMEI) at once, so it
    could be sold twice, or listed by someone who only saw its IMEI. Now 422 `device_already_listed` while
    another listing of it is published or reserved; free again once that one is withdrawn or sold."""
    platform, client = await app_client(aiohttp_client, sqlite_settings)
    value = imei("86891503777771")
    certify(platform, imei_value=value)
    first, second = auth(sqlite_settings, uid("sel")), auth(sqlite_settings, uid("sel"))

    async def listing(h: dict, **over) -> str:  # noqa: ANN003
        r = await client.post("/v1/listings", json=phone_body(value, **over), headers=h)
        assert r.status == 201, await r.text()
        return (await r.json())["id"]

    a, b, a2 = (
        await listing(first),
        await listing(second),
        await listing(first, title="华为 Mate 40 再发一次"),
    )
    assert (await client.post(f"/v1/listings/{a}/publish", headers=first)).status == 200
    for lid, h in ((b, second), (a2, first)):
        r = await client.post(f"/v1/listings/{lid}/publish", headers=h)
        assert r.status == 422, await r.text()
        problem = await r.json()
        assert problem["reason"] == "device_already_listed" and a in problem["detail"]
        got = await (await client.get(f"/v1/listings/{lid}", headers=h)).json()
        assert got["status"] == "draft" and got["version"] == 1  # nothing written
    assert (await client.post(f"/v1/listings/{a}/withdraw", headers=first)).status == 200
    assert (await client.post(f"/v1/listings/{b}/publish", headers=second)).status == 200
    # reserved counts as on sale
    r = await client.post("/v1/orders", json={"listing_id": b}, headers=auth(sqlite_settings, uid("buy")))
    assert r.status == 201, await r.text()
    r = await client.post(f"/v1/listings/{a2}/publish", headers=first)
    assert r.status == 422 and (await r.json())["reason"] == "device_already_listed"
    # a listing without a device is not concerned
    r = await client.post("/v1/listings", json=book_body(), headers=first)
    assert (await client.post(f"/v1/listings/{(await r.json())['id']}/publish", headers=first)).status == 200
