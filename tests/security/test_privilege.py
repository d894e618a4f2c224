"""Fixes 2 and 3: no self-granted power (OWASP API5, broken function-level authorization), in both runs."""

from __future__ import annotations

from tests.security.flows import accountant_of, pending_firm, verified_firm
from tests.security.harness import Api

TAX = "/v1/admin/invoicing/tax-unpaid"


async def test_an_accountant_cannot_lift_a_tax_suspension(api: Api) -> None:
    owner = await api.login()
    fid, owner = await verified_firm(api, owner)
    accountant = await accountant_of(api, fid, owner)
    admin = await api.admin()
    r = await api.call("POST", TAX, admin, json={"firm_id": fid, "period": "2026-10", "status": "unpaid"})
    assert r.status == 201 and r.body["suspended"] is True, r

    r = await api.call("POST", TAX, accountant, json={"firm_id": fid, "period": "2026-10", "status": "paid"})
    assert r.status == 403 and r.reason == "admin_only", r
    r = await api.call("GET", f"/v1/admin/invoicing/issuers/{fid}", accountant)
    assert r.status == 200 and r.body["suspended"] is True, r

    r = await api.call("POST", TAX, admin, json={"firm_id": fid, "period": "2026-10", "status": "paid"})
    assert r.status == 201 and r.body["suspended"] is False, r
    period = r.body["tax_periods"][0]
    assert period["paid_by"] == admin.user_id and period["recorded_by"] == admin.user_id


async def test_nobody_becomes_an_accountant_through_an_unverified_firm(api: Api) -> None:
    user = await api.login()
    fid = await pending_firm(api, user)
    r = await api.call("POST", f"/v1/firms/{fid}/accountants", user, json={"user_id": user.user_id})
    assert r.status == 422 and r.reason == "firm_not_verified", r
    user = await api.refresh(user)
    assert (
        "accountant" not in user.roles and fid not in (await api.call("GET", "/v1/me", user)).body["firm_ids"]
    )
    r = await api.call(
        "POST", "/v1/tax/exports", user, json={"firm_id": fid, "period": "2026-10", "format": "csv"}
    )
    assert r.status == 403, r


async def test_an_accountant_acts_for_their_firm_only(api: Api) -> None:
    owner_a, owner_b = await api.login(), await api.login()
    fa, owner_a = await verified_firm(api, owner_a)
    fb, owner_b = await verified_firm(api, owner_b)
    accountant = await accountant_of(api, fa, owner_a)
    assert accountant.roles.count("accountant") == 1
    assert (await api.call("GET", f"/v1/admin/invoicing/issuers/{fa}", accountant)).status == 200
    r = await api.call("GET", f"/v1/admin/invoicing/issuers/{fb}", accountant)
    assert r.status == 403, r
    r = await api.call("POST", TAX, accountant, json={"firm_id": fb, "period": "2026-10", "status": "unpaid"})
    assert r.status == 403, r
