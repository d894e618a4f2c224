"""The accounts flow through the public API: login, identity, consent, firm, qualification, collector, admin.

Runs on SQLite (embedded) and PostgreSQL (one schema per service)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from services.kernel import pii
from services.kernel.auth import verify_token
from services.kernel.outbox import outbox_t
from tests.gateway.support import CITY_CODE, ID_NUMBER, USCC, call, login, start

ADMIN_PHONE = "13900000001"
OWNER_PHONE = "13800138000"
RESIDENT_PHONE = "13912345678"
COLLECTOR_PHONE = "15011112222"
COLLECTOR_ID = "44030519900101123X"  # a second valid 身份证号


def events_of(platform, type_suffix: str) -> list[dict]:  # noqa: ANN001
    with platform["accounts"].db.session() as s:
        rows = s.execute(select(outbox_t.c.type, outbox_t.c.payload).order_by(outbox_t.c.seq)).all()
    return [json.loads(p)["data"] for t, p in rows if t.endswith(type_suffix)]


async def _flow(aiohttp_client, settings) -> None:  # noqa: ANN001, C901
    settings = settings.model_copy(update={"admin_phones": f"{ADMIN_PHONE}, 12345"})
    platform, client = await start(aiohttp_client, settings)

    admin = await login(client, platform, ADMIN_PHONE)
    assert "admin" in admin.roles and "resident" in admin.roles
    resident = await login(client, platform, RESIDENT_PHONE)
    assert resident.roles == ["resident"]
    assert len(events_of(platform, "user.registered.v1")) == 2
    assert [e["user_id"] for e in events_of(platform, "roles_changed.v1")] == [admin.user_id]

    # the same phone logs in again: same user, no new registration
    again = await login(client, platform, RESIDENT_PHONE)
    assert again.user_id == resident.user_id and len(events_of(platform, "user.registered.v1")) == 2

    st, me = await call(client, "GET", "/v1/me", resident)
    assert st == 200
    assert me == {
        "user_id": resident.user_id,
        "phone_masked": "139****5678",
        "roles": ["resident"],
        "identity_verified": False,
        "name_masked": None,
        "id_number_masked": None,
        "firm_ids": [],
        "consents": [],
    }

    # identity: checked, masked, encrypted; the event carries ciphertext only
    st, body = await call(
        client,
        "POST",
        "/v1/me/identity",
        resident,
        json={"real_name": "张三", "id_number": "11010519491231002x"},
    )
    assert st == 200, body
    assert body["name_masked"] == "张*" and body["id_number_masked"] == "110***********002X"
    assert body["identity_verified"] is True
    ev = events_of(platform, "identity_verified.v1")[0]
    assert pii.decrypt(settings, ev["id_number_enc"]) == ID_NUMBER
    assert pii.decrypt(settings, ev["real_name_enc"]) == "张三"
    assert ID_NUMBER not in json.dumps(ev, ensure_ascii=False) and "张三" not in json.dumps(
        ev, ensure_ascii=False
    )
    st, body = await call(
        client,
        "POST",
        "/v1/me/identity",
        resident,
        json={"real_name": "张三", "id_number": "110105194912310021"},
    )
    assert st == 400 and body["errors"][0]["field"] == "id_number" and "check" in body["errors"][0]["message"]
    # another account cannot claim the same ID number
    st, body = await call(
        client, "POST", "/v1/me/identity", admin, json={"real_name": "张三", "id_number": ID_NUMBER}
    )
    assert st == 409, body

    st, body = await call(client, "POST", "/v1/me/consents", resident, json={"kind": "reverse_invoicing"})
    assert st == 201 and body["kind"] == "reverse_invoicing"
    assert events_of(platform, "consent_recorded.v1")[0]["user_id"] == resident.user_id
    st, me = await call(client, "GET", "/v1/me", resident)
    assert me["identity_verified"] is True and me["consents"] == ["reverse_invoicing"]
    assert me["id_number_masked"] == "110***********002X"

    # a firm: pending, the caller owns it
    owner = await login(client, platform, OWNER_PHONE)
    firm_in = {
        "name": "绿色再生资源回收有限公司",
        "uscc": USCC,
        "recycler_filing_no": "BA-2024-0001",
        "address": "北京市朝阳区某路1号",
        "city_code": CITY_CODE,
    }
    st, firm = await call(client, "POST", "/v1/firms", owner, json=firm_in)
    assert st == 201 and firm["status"] == "pending" and firm["owner_user_id"] == owner.user_id
    fid = firm["id"]
    st, body = await call(client, "POST", "/v1/firms", resident, json=firm_in)
    assert st == 409 and body["current_state"] == "pending"
    st, body = await call(
        client, "POST", "/v1/firms", owner, json=firm_in | {"uscc": USCC[:-1] + "4", "city_code": "12345"}
    )
    assert st == 400 and {e["field"] for e in body["errors"]} >= {"city_code"}
    st, body = await call(client, "POST", "/v1/firms", owner, json=firm_in | {"uscc": USCC[:-1] + "4"})
    assert st == 400 and body["errors"][0]["field"] == "uscc"

    qual_in = {"kind": "recycler_filing", "number": "HB-2024-77", "valid_until": "2099-12-31"}
    st, body = await call(client, "POST", f"/v1/firms/{fid}/qualifications", resident, json=qual_in)
    assert st == 403 and body["reason"] == "not_owner"
    st, body = await call(client, "POST", "/v1/firms/fm_nope/qualifications", owner, json=qual_in)
    assert st == 404
    st, body = await call(
        client, "POST", f"/v1/firms/{fid}/qualifications", owner, json=qual_in | {"valid_until": "2001-01-01"}
    )
    assert st == 422 and body["errors"][0]["field"] == "valid_until"
    st, qual = await call(client, "POST", f"/v1/firms/{fid}/qualifications", owner, json=qual_in)
    assert st == 201 and qual["status"] == "pending"

    # a collector cannot join a firm that is not verified yet
    coll_phone_user = await login(client, platform, COLLECTOR_PHONE)
    coll_in = {
        "real_name": "李四",
        "id_number": COLLECTOR_ID,
        "firm_id": fid,
        "area": {"lat": 39.92, "lng": 116.46, "radius_km": 5},
        "categories": ["metal.copper"],
    }
    st, body = await call(client, "POST", "/v1/collectors", coll_phone_user, json=coll_in)
    assert st == 422 and body["reason"] == "firm_not_verified"

    # admin approves the firm; the owner's next tokens carry role firm and the firm id
    st, body = await call(client, "POST", f"/v1/admin/verifications/firm/{fid}/approve", owner)
    assert st == 403
    st, pending = await call(client, "GET", "/v1/admin/verifications?kind=firm", admin)
    assert st == 200 and [i["id"] for i in pending["items"]] == [fid]
    st, body = await call(client, "POST", f"/v1/admin/verifications/firm/{fid}/approve", admin)
    assert st == 200 and body["status"] == "verified"
    st, body = await call(client, "POST", f"/v1/admin/verifications/firm/{fid}/approve", admin)
    assert st == 200 and body["status"] == "verified"  # idempotent: no second event
    assert [e["firm_id"] for e in events_of(platform, "firm.verified.v1")] == [fid]
    st, body = await call(client, "POST", f"/v1/admin/verifications/licence/{fid}/approve", admin)
    assert st == 404
    st, tokens = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": owner.refresh_token})
    assert st == 200 and "firm" in tokens["roles"] and tokens["firm_ids"] == [fid]
    p = verify_token(settings, tokens["access_token"])
    assert p.acts_for(fid, "owner") and not p.acts_for(fid, "accountant")

    st, body = await call(
        client, "POST", f"/v1/admin/verifications/qualification/{qual['id']}/approve", admin
    )
    assert st == 200
    q_ev = events_of(platform, "qualification_approved.v1")[0]
    assert q_ev["qualification_id"] == qual["id"] and q_ev["valid_until"] == "2099-12-31"

    # collector: bad categories are named; then pending; admin approves; role collector from then on
    st, body = await call(
        client,
        "POST",
        "/v1/collectors",
        coll_phone_user,
        json=coll_in | {"categories": ["metal.copper", "metal", "nope"]},
    )
    assert st == 400 and {e["field"] for e in body["errors"]} == {"categories.1", "categories.2"}
    st, coll = await call(client, "POST", "/v1/collectors", coll_phone_user, json=coll_in)
    assert st == 201 and coll["status"] == "pending", coll
    assert coll["name_masked"] == "李*" and coll["id_number_masked"] == "440***********123X"
    st, body = await call(client, "POST", f"/v1/admin/verifications/collector/{coll['id']}/approve", admin)
    assert st == 200
    c_ev = events_of(platform, "collector.verified.v1")[0]
    assert c_ev["user_id"] == coll_phone_user.user_id and c_ev["firm_id"] == fid
    assert c_ev["categories"] == ["metal.copper"] and c_ev["radius_km"] == 5
    st, tokens = await call(
        client, "POST", "/v1/auth/refresh", json={"refresh_token": coll_phone_user.refresh_token}
    )
    assert st == 200 and "collector" in tokens["roles"] and tokens["firm_ids"] == [fid]

    # the owner names an accountant
    st, body = await call(
        client, "POST", f"/v1/firms/{fid}/accountants", resident, json={"user_id": resident.user_id}
    )
    assert st == 403
    st, body = await call(
        client, "POST", f"/v1/firms/{fid}/accountants", owner, json={"user_id": "us_nobody"}
    )
    assert st == 422 and body["errors"][0]["field"] == "user_id"
    st, body = await call(
        client, "POST", f"/v1/firms/{fid}/accountants", owner, json={"user_id": resident.user_id}
    )
    assert st == 201 and body == {"firm_id": fid, "user_id": resident.user_id, "role": "accountant"}
    assert events_of(platform, "accountant_added.v1")[0]["user_id"] == resident.user_id
    st, tokens = await call(
        client, "POST", "/v1/auth/refresh", json={"refresh_token": resident.refresh_token}
    )
    assert st == 200 and "accountant" in tokens["roles"] and tokens["firm_ids"] == [fid]
    assert verify_token(settings, tokens["access_token"]).acts_for(fid, "accountant")

    # admin grants roles; derived roles cannot be granted by hand
    st, body = await call(
        client, "POST", f"/v1/admin/users/{owner.user_id}/roles", admin, json={"roles": ["erasure_operator"]}
    )
    assert st == 200 and set(body["roles"]) == {"resident", "firm", "erasure_operator"}
    st, body = await call(
        client, "POST", f"/v1/admin/users/{owner.user_id}/roles", admin, json={"roles": ["firm"]}
    )
    assert st == 400 and body["errors"][0]["field"] == "roles.0"
    st, body = await call(client, "POST", "/v1/admin/users/us_nobody/roles", admin, json={"roles": ["admin"]})
    assert st == 404
    changed = [e for e in events_of(platform, "roles_changed.v1") if e["user_id"] == owner.user_id]
    assert changed[-1]["roles"] == ["erasure_operator", "firm", "resident"] and changed[-1]["firm_ids"] == [
        fid
    ]

    # nothing personal is stored in clear
    with platform["accounts"].db.engine.connect() as conn:
        dump = []
        for table in ("users", "collectors", "otp_codes", "outbox"):
            for row in conn.execute(text(f"select * from {table}")):
                dump.append(" ".join(str(v) for v in row))
    blob = "\n".join(dump)
    for secret in (RESIDENT_PHONE, OWNER_PHONE, ID_NUMBER, COLLECTOR_ID, "张三", "李四"):
        assert secret not in blob, secret


async def test_accounts_flow_sqlite(aiohttp_client, sqlite_settings) -> None:  # noqa: ANN001
    await _flow(aiohttp_client, sqlite_settings)


@pytest.mark.postgres
async def test_accounts_flow_postgres(aiohttp_client, pg_settings) -> None:  # noqa: ANN001
    await _flow(aiohttp_client, pg_settings)
