"""Fix 1: taking power away takes effect on the next request, in both runs (OWASP API2/API5).

An access token carries its user's token version; role removal, suspension and logout raise the version, and every
request is checked against the current one (memory embedded, Redis distributed). Nobody changes their own roles.
"""

from __future__ import annotations

from services.accounts.handlers import republish_versions
from services.kernel import revocation
from tests.security.harness import Api

ADMIN_ONLY = "/v1/admin/verifications"


async def _make_admin(api: Api):  # noqa: ANN202
    root = await api.admin()
    user = await api.login()
    r = await api.call("POST", f"/v1/admin/users/{user.user_id}/roles", root, json={"roles": ["admin"]})
    assert r.status == 200 and "admin" in r.body["roles"], r
    user = await api.refresh(user)
    assert "admin" in user.roles
    return root, user


async def test_a_revoked_role_stops_the_old_token_at_once(api: Api) -> None:
    root, user = await _make_admin(api)
    assert (await api.call("GET", ADMIN_ONLY, user)).status == 200

    r = await api.call(
        "POST", f"/v1/admin/users/{user.user_id}/roles", root, json={"roles": [], "revoke": ["admin"]}
    )
    assert r.status == 200 and "admin" not in r.body["roles"], r

    r = await api.call("GET", ADMIN_ONLY, user)
    assert r.status == 401 and r.reason == "token_revoked", r
    assert r.headers["Content-Type"].startswith("application/problem+json")
    # ... and it cannot grant itself admin back
    r = await api.call("POST", f"/v1/admin/users/{user.user_id}/roles", user, json={"roles": ["admin"]})
    assert r.status == 401 and r.reason == "token_revoked", r

    # the refresh token still works and carries the roles as they are now
    user = await api.refresh(user)
    assert "admin" not in user.roles
    assert (await api.call("GET", "/v1/me", user)).status == 200
    r = await api.call("GET", ADMIN_ONLY, user)
    assert r.status == 403 and r.reason == "role_required", r


async def test_nobody_changes_their_own_roles(api: Api) -> None:
    root, other_admin = await _make_admin(api)
    for body in ({"roles": ["erasure_operator"]}, {"roles": [], "revoke": ["admin"]}, {"roles": ["admin"]}):
        r = await api.call("POST", f"/v1/admin/users/{other_admin.user_id}/roles", other_admin, json=body)
        assert r.status == 403 and r.reason == "self_role_change", r
    me = await api.call("GET", "/v1/me", other_admin)
    assert sorted(me.body["roles"]) == ["admin", "resident"]


async def test_suspension_stops_tokens_login_and_refresh(api: Api) -> None:
    root = await api.admin()
    user = await api.login()
    r = await api.call(
        "POST", f"/v1/admin/users/{user.user_id}/suspend", root, json={"reason": "fraud report"}
    )
    assert r.status == 200 and r.body["suspended"] is True, r

    r = await api.call("GET", "/v1/me", user)
    assert r.status == 401 and r.reason == "token_revoked", r
    r = await api.call("POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert r.status == 401, r
    await api.call("POST", "/v1/auth/otp", json={"phone": user.phone})
    r = await api.call(
        "POST", "/v1/auth/token", json={"phone": user.phone, "code": api.topo.sms_code(user.phone)}
    )
    assert r.status == 403 and r.reason == "account_suspended", r
    r = await api.call("POST", f"/v1/admin/users/{root.user_id}/suspend", root, json={"reason": "me"})
    assert r.status == 403 and r.reason == "self_suspend", r

    r = await api.call("POST", f"/v1/admin/users/{user.user_id}/reinstate", root)
    assert r.status == 200 and r.body["suspended"] is False, r
    again = await api.login(user.phone)
    assert (await api.call("GET", "/v1/me", again)).status == 200
    assert (await api.call("GET", "/v1/me", user)).status == 401  # the old token stays revoked


async def test_logout_revokes_access_and_refresh_tokens(api: Api) -> None:
    user = await api.login()
    second_device = await api.login(user.phone)
    r = await api.call("POST", "/v1/auth/logout", user)
    assert r.status == 200 and r.body["status"] == "logged_out", r
    for token_holder in (user, second_device):
        r = await api.call("GET", "/v1/me", token_holder)
        assert r.status == 401 and r.reason == "token_revoked", r
        r = await api.call("POST", "/v1/auth/refresh", json={"refresh_token": token_holder.refresh_token})
        assert r.status == 401, r
    fresh = await api.login(user.phone)
    assert (await api.call("GET", "/v1/me", fresh)).status == 200


async def test_a_restarted_copy_learns_recent_revocations_back(api: Api) -> None:
    user = await api.login()
    assert (await api.call("POST", "/v1/auth/logout", user)).status == 200
    settings = api.topo.settings
    store = revocation.token_versions(settings)
    if api.mode == "embedded":  # a restart: the memory copy starts empty
        revocation._STORES.pop(("memory", str(settings.data_dir)))
    else:  # a flushed Redis
        store.redis.delete(store.prefix + user.user_id)  # type: ignore[attr-defined]
    assert revocation.token_versions(settings).current(user.user_id) == 0
    assert republish_versions(api.topo.platform["accounts"]) >= 1  # what accounts' start-up does
    r = await api.call("GET", "/v1/me", user)
    assert r.status == 401 and r.reason == "token_revoked", r
