"""Booking rules, roles and ownership on the public API: each refusal names its field or reason."""

from __future__ import annotations

from datetime import datetime, time, timedelta

from services.booking.domain.model import EDGES, TRANSITIONS

from .support import SHANGHAI, app_client, auth, booking_body, uid, verify_collector, window


async def _setup(aiohttp_client, settings, **booking):  # noqa: ANN001, ANN202
    platform, client = await app_client(aiohttp_client, settings, **booking)
    return platform, client


async def _problem(r, status: int) -> dict:  # noqa: ANN001
    assert r.status == status, await r.text()
    assert r.content_type == "application/problem+json"
    return await r.json()


async def test_booking_refusals(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s, slot_capacity=1)
    h = auth(s, uid("res"), "resident")

    async def book(body: dict):  # noqa: ANN202
        return await client.post("/v1/pickups", json=body, headers=h)

    tomorrow = (datetime.now(SHANGHAI) + timedelta(days=1)).date()
    cases = [
        (booking_body(win=window(start=time(7, 30))), 422, "outside_service_hours"),
        (booking_body(win=window(start=time(17, 30), minutes=60)), 422, "outside_service_hours"),
        (booking_body(win=window(start=time(10, 15))), 422, "window_not_on_slot"),
        (booking_body(win=window(start=time(10, 0), minutes=150)), 422, "window_too_long"),
        (booking_body(win=window(day=tomorrow + timedelta(days=30))), 422, "window_too_far"),
        (booking_body(win=window(day=tomorrow - timedelta(days=2))), 422, "window_too_soon"),
        (booking_body(items=[{"category": "paper.cardboard", "est_qty": "2"}]), 422, "below_minimum"),
        (booking_body(items=[{"category": "metal.copper", "est_qty": "99999"}]), 422, "above_maximum"),
        (booking_body(lat=22.54, lng=114.05), 422, "address_mismatch"),  # 深圳 coordinates, 北京 code
        (booking_body(lat=35.0, lng=60.0), 422, "outside_service_area"),
    ]
    for body, status, reason in cases:
        p = await _problem(await book(body), status)
        assert p["reason"] == reason, (reason, p)

    p = await _problem(await book(booking_body(city_code="999999")), 400)
    assert p["errors"][0]["field"] == "address.city_code"
    p = await _problem(await book(booking_body(items=[{"category": "metal.gold", "est_qty": "1"}])), 400)
    assert p["errors"][0]["field"] == "items.0.category"
    p = await _problem(
        await book(booking_body(items=[{"category": "appliance.fridge", "est_qty": "1.5"}])), 400
    )
    assert p["errors"][0]["field"] == "items.0.est_qty"
    p = await _problem(
        await book(booking_body(items=[{"category": "metal.copper", "est_qty": "1.2345"}])), 400
    )
    assert p["errors"][0]["field"] == "items.0.est_qty"
    body = booking_body()
    body["window"]["start"] = body["window"]["start"][:19]  # no offset
    p = await _problem(await book(body), 400)
    assert p["errors"][0]["field"] == "window.start"
    for edge in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):  # no UTC time (was a 500)
        body = booking_body()
        body["window"]["start"] = edge
        p = await _problem(await book(body), 400)
        assert p["errors"][0]["field"] == "window.start", p

    # capacity 1: the same slot in the same area is full for the next booking; another slot is fine
    assert (await book(booking_body())).status == 201
    p = await _problem(await book(booking_body()), 422)
    assert p["reason"] == "slot_full"
    assert (await book(booking_body(win=window(start=time(11, 0))))).status == 201
    # a window overlapping the full slot is refused as well
    p = await _problem(await book(booking_body(win=window(start=time(9, 30), minutes=60))), 422)
    assert p["reason"] == "slot_full"


async def test_roles_and_ownership(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s)
    alice, bob, col, other_col = uid("res"), uid("res"), uid("col"), uid("col")
    verify_collector(platform, col)
    verify_collector(platform, other_col)
    assert (await client.post("/v1/pickups", json=booking_body())).status == 401
    await _problem(
        await client.post("/v1/pickups", json=booking_body(), headers=auth(s, col, "collector")), 403
    )
    r = await client.post("/v1/pickups", json=booking_body(), headers=auth(s, alice, "resident"))
    pid = (await r.json())["id"]

    await _problem(await client.get(f"/v1/pickups/{pid}", headers=auth(s, bob, "resident")), 403)
    await _problem(await client.get(f"/v1/pickups/{pid}", headers=auth(s, col, "collector")), 403)
    await _problem(await client.get("/v1/pickups/pk_nope", headers=auth(s, alice, "resident")), 404)
    admin_view = await (await client.get(f"/v1/pickups/{pid}", headers=auth(s, uid("adm"), "admin"))).json()
    assert admin_view["address"]["text"]
    await _problem(await client.post(f"/v1/pickups/{pid}/cancel", headers=auth(s, bob, "resident")), 403)
    # a resident cannot grab jobs; an unverified collector cannot either
    await _problem(await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, bob, "resident")), 403)
    await _problem(await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, uid("col"), "collector")), 403)
    await _problem(await client.get("/v1/jobs", headers=auth(s, uid("col"), "collector")), 403)
    # lists show only one's own
    mine = await (await client.get("/v1/pickups?mine=1", headers=auth(s, bob, "resident"))).json()
    assert mine == {"items": [], "next_cursor": None}
    mine = await (await client.get("/v1/pickups?mine=1", headers=auth(s, alice, "resident"))).json()
    assert [p["id"] for p in mine["items"]] == [pid]

    c = auth(s, col, "collector")
    assert (await client.post(f"/v1/jobs/{pid}/accept", headers=c)).status == 200
    r = await client.post(f"/v1/jobs/{pid}/accept", headers=c)  # idempotent for the winner
    assert r.status == 200 and (await r.json())["collector_id"] == "cl_" + col
    p = await _problem(
        await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, other_col, "collector")), 409
    )
    assert p["current_state"] == "accepted"
    # only the accepting collector works on it
    await _problem(
        await client.post(f"/v1/pickups/{pid}/arrive", headers=auth(s, other_col, "collector")), 403
    )
    await _problem(await client.get(f"/v1/pickups/{pid}", headers=auth(s, other_col, "collector")), 403)
    assert (await client.get(f"/v1/pickups/{pid}", headers=c)).status == 200
    listed = await (await client.get("/v1/pickups?mine=1", headers=c)).json()
    assert [p["id"] for p in listed["items"]] == [pid]
    # the resident cannot weigh; the collector cannot settle
    await _problem(
        await client.post(
            f"/v1/pickups/{pid}/weigh",
            headers=auth(s, alice, "resident"),
            json={"lines": [{"category": "metal.copper", "qty": "1"}]},
        ),
        403,
    )
    await _problem(await client.post(f"/v1/pickups/{pid}/settle", headers=c), 403)


async def test_illegal_transitions_answer_409_with_state(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s)
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    r_h, c_h = auth(s, res, "resident"), auth(s, col, "collector")
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    p = await _problem(await client.post(f"/v1/pickups/{pid}/settle", headers=r_h), 409)
    assert p["current_state"] == "requested"
    await client.post(f"/v1/jobs/{pid}/accept", headers=c_h)
    weigh = {
        "lines": [{"category": "paper.cardboard", "qty": "12.5"}, {"category": "metal.copper", "qty": "1.2"}]
    }
    p = await _problem(await client.post(f"/v1/pickups/{pid}/weigh", headers=c_h, json=weigh), 409)
    assert p["current_state"] == "accepted"
    assert (await client.post(f"/v1/pickups/{pid}/arrive", headers=c_h)).status == 200
    p = await _problem(await client.post(f"/v1/pickups/{pid}/arrive", headers=c_h), 409)
    assert p["current_state"] == "arrived"
    p = await _problem(await client.post(f"/v1/pickups/{pid}/cancel", headers=r_h), 409)
    assert p["current_state"] == "arrived"
    # a result far from the estimate needs a reason
    p = await _problem(
        await client.post(
            f"/v1/pickups/{pid}/weigh",
            headers=c_h,
            json={"lines": [{"category": "paper.cardboard", "qty": "12.5"}]},
        ),
        422,
    )
    assert p["reason"] == "reason_required"
    r = await client.post(f"/v1/pickups/{pid}/weigh", headers=c_h, json=weigh)
    assert r.status == 200 and (await r.json())["total_fen"] == 7150
    r = await client.post(f"/v1/pickups/{pid}/dispute", headers=r_h, json={"reason": "秤不准"})
    assert (await r.json())["status"] == "disputed"
    p = await _problem(await client.post(f"/v1/pickups/{pid}/settle", headers=r_h), 409)
    assert p["current_state"] == "disputed"
    # weighed again (another scale, a reason): the resident can settle
    r = await client.post(
        f"/v1/pickups/{pid}/weigh",
        headers=c_h,
        json={
            "lines": [
                {"category": "paper.cardboard", "qty": "13"},
                {"category": "metal.copper", "qty": "1.25"},
                {"category": "plastic.pet", "qty": "3"},
            ],
            "reason": "复称，另有PET瓶",
            "scale_reading": "#B7",
        },
    )
    w = await r.json()
    assert w["status"] == "weighed" and {ln["category"] for ln in w["lines"]} == {
        "paper.cardboard",
        "metal.copper",
        "plastic.pet",
    }
    pet = next(ln for ln in w["lines"] if ln["category"] == "plastic.pet")
    assert pet["est_qty"] is None and pet["amount_fen"] == 750
    assert (await client.post(f"/v1/pickups/{pid}/settle", headers=r_h)).status == 200
    for path in ("cancel", "dispute", "settle"):
        body = {"reason": "x" * 3} if path == "dispute" else None
        p = await _problem(await client.post(f"/v1/pickups/{pid}/{path}", headers=r_h, json=body), 409)
        assert p["current_state"] == "settled"


async def test_cancel_rules(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s, resident_cancel_cutoff_minutes=60 * 24 * 3)
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    r_h, c_h = auth(s, res, "resident"), auth(s, col, "collector")
    # requested: the resident may always cancel; the slot's place is given back
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    r = await client.post(f"/v1/pickups/{pid}/cancel", headers=r_h, json={"reason": "改天"})
    assert r.status == 200 and (await r.json())["status"] == "cancelled"
    # accepted, within the cut-off (3 days here): refused with the reason
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    await client.post(f"/v1/jobs/{pid}/accept", headers=c_h)
    p = await _problem(await client.post(f"/v1/pickups/{pid}/cancel", headers=r_h), 422)
    assert p["reason"] == "cancel_cutoff"
    # an admin may
    r = await client.post(f"/v1/pickups/{pid}/cancel", headers=auth(s, uid("adm"), "admin"))
    assert (await r.json())["status"] == "cancelled"
    view = await (await client.get(f"/v1/pickups/{pid}", headers=r_h)).json()
    assert view["closed"]["by"] == "admin"


async def test_reschedule_moves_the_window_and_its_places(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s, slot_capacity=1)
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    r_h = auth(s, res, "resident")
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    other = (
        await (
            await client.post(
                "/v1/pickups",
                json=booking_body(win=window(start=time(11, 0))),
                headers=auth(s, uid("res"), "resident"),
            )
        ).json()
    )["id"]
    # 11:00 is full (capacity 1); 14:00 is free
    p = await _problem(
        await client.post(
            f"/v1/pickups/{pid}/reschedule", headers=r_h, json={"window": window(start=time(11, 0))}
        ),
        422,
    )
    assert p["reason"] == "slot_full"
    p = await _problem(
        await client.post(
            f"/v1/pickups/{pid}/reschedule", headers=r_h, json={"window": window(start=time(19, 0))}
        ),
        422,
    )
    assert p["reason"] == "outside_service_hours"
    r = await client.post(
        f"/v1/pickups/{pid}/reschedule", headers=r_h, json={"window": window(start=time(14, 0))}
    )
    assert r.status == 200, await r.text()
    assert (await r.json())["window"]["start"].endswith("T14:00:00+08:00")
    # 10:00 is free again for someone else
    assert (
        await client.post("/v1/pickups", json=booking_body(), headers=auth(s, uid("res"), "resident"))
    ).status == 201
    await _problem(
        await client.post(
            f"/v1/pickups/{other}/reschedule", headers=r_h, json={"window": window(start=time(15, 0))}
        ),
        403,
    )
    await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, col, "collector"))
    p = await _problem(
        await client.post(
            f"/v1/pickups/{pid}/reschedule", headers=r_h, json={"window": window(start=time(15, 0))}
        ),
        409,
    )
    assert p["current_state"] == "accepted"


async def test_collector_must_cover_area_and_categories(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s)
    far, paper_only, ok = uid("col"), uid("col"), uid("col")
    verify_collector(platform, far, lat=39.99, lng=116.30, radius_km=5)  # 海淀, ~17 km away
    verify_collector(platform, paper_only, categories=["paper.cardboard"])
    verify_collector(platform, ok)
    r_h = auth(s, uid("res"), "resident")
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    p = await _problem(await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, far, "collector")), 422)
    assert p["reason"] == "outside_area"
    p = await _problem(
        await client.post(f"/v1/jobs/{pid}/accept", headers=auth(s, paper_only, "collector")), 422
    )
    assert p["reason"] == "category_mismatch" and p["missing"] == ["metal.copper"]
    for who in (far, paper_only):
        jobs = await (await client.get("/v1/jobs", headers=auth(s, who, "collector"))).json()
        assert pid not in [j["id"] for j in jobs["items"]]
    jobs = await (await client.get("/v1/jobs", headers=auth(s, ok, "collector"))).json()
    assert [j["id"] for j in jobs["items"]] == [pid]


async def test_no_show_by_the_resident(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s, no_show_wait_minutes=0)
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    c_h = auth(s, col, "collector")
    pid = (
        await (await client.post("/v1/pickups", json=booking_body(), headers=auth(s, res, "resident"))).json()
    )["id"]
    await client.post(f"/v1/jobs/{pid}/accept", headers=c_h)
    p = await _problem(await client.post(f"/v1/pickups/{pid}/no-show", headers=c_h), 409)
    assert p["current_state"] == "accepted"
    await client.post(f"/v1/pickups/{pid}/arrive", headers=c_h)
    # the window opens tomorrow: too early to give up on the resident
    p = await _problem(await client.post(f"/v1/pickups/{pid}/no-show", headers=c_h), 422)
    assert p["reason"] == "too_early"


async def test_complaints_with_evidence(aiohttp_client, sqlite_settings):
    s = sqlite_settings
    platform, client = await _setup(aiohttp_client, s)
    res, col = uid("res"), uid("col")
    verify_collector(platform, col)
    r_h, c_h = auth(s, res, "resident"), auth(s, col, "collector")
    pid = (await (await client.post("/v1/pickups", json=booking_body(), headers=r_h)).json())["id"]
    complaint = {
        "kind": "weighing",
        "text": "秤的读数不对",
        "evidence": [{"kind": "photo", "url": "https://files.example.cn/e/1.jpg", "sha256": "ab" * 32}],
    }
    p = await _problem(await client.post(f"/v1/pickups/{pid}/complaints", headers=r_h, json=complaint), 409)
    assert p["current_state"] == "requested"  # nobody to complain about yet
    await client.post(f"/v1/jobs/{pid}/accept", headers=c_h)
    p = await _problem(
        await client.post(f"/v1/pickups/{pid}/complaints", headers=r_h, json=complaint | {"evidence": []}),
        400,
    )
    assert p["errors"][0]["field"] == "evidence"
    r = await client.post(f"/v1/pickups/{pid}/complaints", headers=r_h, json=complaint)
    assert r.status == 201, await r.text()
    c = await r.json()
    assert c["status"] == "open" and c["by_role"] == "resident" and c["evidence"][0]["sha256"] == "ab" * 32
    await _problem(
        await client.post(
            f"/v1/pickups/{pid}/complaints", headers=auth(s, uid("res"), "resident"), json=complaint
        ),
        403,
    )
    listed = await (await client.get(f"/v1/pickups/{pid}/complaints", headers=c_h)).json()
    assert [x["id"] for x in listed["items"]] == [c["id"]]


async def test_openapi_documents_booking_routes(aiohttp_client, sqlite_settings):
    platform, client = await _setup(aiohttp_client, sqlite_settings)
    doc = await (await client.get("/openapi.json")).json()
    for path in (
        "/v1/pickups",
        "/v1/pickups/{id}",
        "/v1/pickups/{id}/cancel",
        "/v1/jobs",
        "/v1/jobs/stream",
        "/v1/jobs/{id}/accept",
        "/v1/pickups/{id}/arrive",
        "/v1/pickups/{id}/weigh",
        "/v1/pickups/{id}/settle",
        "/v1/pickups/{id}/dispute",
        "/v1/pickups/{id}/rating",
        "/v1/pickups/{id}/complaints",
        "/v1/pickups/{id}/payout/retry",
        "/v1/pickups/{id}/no-show",
    ):
        assert path in doc["paths"], path
    assert doc["paths"]["/v1/pickups"]["post"]["x-policy"] == "roles:resident"


def test_transition_table_is_closed():
    from services.booking.domain.model import STATUSES, TERMINAL

    for action, edges in TRANSITIONS.items():
        assert set(edges) <= set(STATUSES) and set(edges.values()) <= set(STATUSES), action
    assert not any(a in TERMINAL for a, _ in EDGES)
