"""Phone login: codes (expiry, attempts, per-phone limit, hashed at rest, dev_code only in dev), access and
refresh tokens (rotation, reuse, expiry, tampering)."""

from __future__ import annotations

import base64
import json
import time

import jwt
from sqlalchemy import select

from services.accounts.store import otp_codes
from services.kernel.auth import Principal, issue_token
from tests.gateway.support import call, login, sms_code, start

PHONE = "13812345678"


async def test_dev_code_only_in_dev(aiohttp_client, sqlite_settings) -> None:
    platform, client = await start(aiohttp_client, sqlite_settings)  # env=test
    st, body = await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    assert st == 202 and body == {"status": "sent", "phone_masked": "138****5678", "expires_in_s": 300}
    assert "dev_code" not in body

    dev = sqlite_settings.model_copy(update={"env": "dev", "data_dir": sqlite_settings.data_dir / "dev"})
    platform, client = await start(aiohttp_client, dev)
    st, body = await call(client, "POST", "/v1/auth/otp", json={"phone": "+86 138-1234-5678"})
    assert st == 202 and body["dev_code"] == sms_code(platform, PHONE) and len(body["dev_code"]) == 6
    st, tok = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": body["dev_code"]})
    assert st == 200 and tok["token_type"] == "bearer" and tok["roles"] == ["resident"]
    assert set(tok) >= {"access_token", "refresh_token", "token_type", "user_id", "roles"}


async def test_bad_phone_is_named(aiohttp_client, sqlite_settings) -> None:
    _, client = await start(aiohttp_client, sqlite_settings)
    st, body = await call(client, "POST", "/v1/auth/otp", json={"phone": "12345678901"})
    assert st == 400 and body["errors"] == [{"field": "phone", "message": body["errors"][0]["message"]}]
    st, body = await call(client, "POST", "/v1/auth/otp", json={})
    assert st == 400 and body["errors"][0]["field"] == "phone"


async def test_codes_are_hashed_and_single_use(aiohttp_client, sqlite_settings) -> None:
    platform, client = await start(aiohttp_client, sqlite_settings)
    await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    code = sms_code(platform, PHONE)
    with platform["accounts"].db.session() as s:
        row = s.execute(select(otp_codes)).one()
    assert row.code_hash != code and len(row.code_hash) == 64 and PHONE not in row.phone_hash
    st, _ = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": code})
    assert st == 200
    st, body = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": code})
    assert st == 401 and body["reason"] == "otp_invalid"


async def test_a_new_code_replaces_the_old(aiohttp_client, sqlite_settings) -> None:
    platform, client = await start(aiohttp_client, sqlite_settings)
    await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    first = sms_code(platform, PHONE)
    await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    second = sms_code(platform, PHONE)
    if first != second:
        st, _ = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": first})
        assert st == 401
    st, _ = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": second})
    assert st == 200


async def test_codes_expire(aiohttp_client, sqlite_settings, monkeypatch) -> None:
    monkeypatch.setenv("OTP_TTL_S", "1")
    platform, client = await start(aiohttp_client, sqlite_settings)
    await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    with platform["accounts"].db.engine.begin() as conn:  # 1 s later, without sleeping
        conn.execute(otp_codes.update().values(expires_at_ms=otp_codes.c.expires_at_ms - 1001))
    st, body = await call(
        client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": sms_code(platform, PHONE)}
    )
    assert st == 401 and "expire" in body["detail"]


async def test_attempts_per_code_are_limited(aiohttp_client, sqlite_settings, monkeypatch) -> None:
    monkeypatch.setenv("OTP_MAX_ATTEMPTS", "3")
    platform, client = await start(aiohttp_client, sqlite_settings)
    await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
    code = sms_code(platform, PHONE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    details = []
    for _ in range(3):
        st, body = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": wrong})
        assert st == 401
        details.append(body["detail"])
    assert "2 attempt(s) left" in details[0] and "too many" in details[2]
    st, body = await call(client, "POST", "/v1/auth/token", json={"phone": PHONE, "code": code})
    assert st == 401  # burned: even the right code no longer works


async def test_codes_per_phone_are_limited(aiohttp_client, sqlite_settings, monkeypatch) -> None:
    monkeypatch.setenv("OTP_PER_PHONE_LIMIT", "2")
    monkeypatch.setenv("OTP_PER_PHONE_WINDOW_S", "600")
    _, client = await start(aiohttp_client, sqlite_settings)
    for _ in range(2):
        st, _ = await call(client, "POST", "/v1/auth/otp", json={"phone": PHONE})
        assert st == 202
    r = await client.post("/v1/auth/otp", json={"phone": PHONE})
    assert r.status == 429 and r.content_type == "application/problem+json"
    assert 590 <= int(r.headers["Retry-After"]) <= 600
    st, _ = await call(client, "POST", "/v1/auth/otp", json={"phone": "13812345679"})
    assert st == 202  # another phone is not affected


async def test_refresh_rotates_and_reuse_revokes_the_family(aiohttp_client, sqlite_settings) -> None:
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, PHONE)
    st, first = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert st == 200 and first["refresh_token"] != user.refresh_token and first["user_id"] == user.user_id
    st, body = await call(
        client, "GET", "/v1/me", headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    assert st == 200
    # the old refresh token again: refused, and the family (including `first`) is revoked
    st, body = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert st == 401 and "already used" in body["detail"]
    st, body = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert st == 401
    # an access token is not a refresh token and the other way round
    st, _ = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": user.access_token})
    assert st == 401
    st, _ = await call(client, "GET", "/v1/me", headers={"Authorization": f"Bearer {user.refresh_token}"})
    assert st == 401


async def test_expired_and_tampered_tokens_are_refused(aiohttp_client, sqlite_settings) -> None:
    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, PHONE)
    me = Principal(user.user_id, frozenset({"resident"}))

    expired = issue_token(sqlite_settings, me, now=int(time.time()) - sqlite_settings.access_token_ttl_s - 1)
    r = await client.get("/v1/me", headers={"Authorization": f"Bearer {expired}"})
    assert r.status == 401 and (await r.json())["detail"] == "token expired"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    # the payload edited to claim admin, the signature kept
    head, payload, sig = user.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["roles"] = ["admin", "resident"]
    forged = ".".join([head, base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("="), sig])
    unsigned = jwt.encode(claims, key=None, algorithm="none")
    other_key = jwt.encode(claims, "another-secret-" + "y" * 32, algorithm="HS256")
    flipped = user.access_token[:-2] + ("AA" if user.access_token[-2:] != "AA" else "BB")
    for bad in (forged, unsigned, other_key, flipped, "not-a-jwt"):
        st, body = await call(
            client, "GET", "/v1/admin/verifications", headers={"Authorization": f"Bearer {bad}"}
        )
        assert st == 401 and body["detail"] == "invalid token", bad
    st, _ = await call(client, "GET", "/v1/me", headers={"Authorization": f"Basic {user.access_token}"})
    assert st == 401
    st, _ = await call(client, "GET", "/v1/me", user)
    assert st == 200


async def test_housekeeping_purges_dead_codes_and_tokens(aiohttp_client, sqlite_settings) -> None:
    from services.accounts import handlers
    from services.accounts.store import refresh_tokens

    platform, client = await start(aiohttp_client, sqlite_settings)
    user = await login(client, platform, PHONE)
    rt = platform["accounts"]
    assert (
        handlers.purge_expired(rt) == 0
    )  # nothing is old yet: the code still counts for the per-phone limit
    later = int(time.time() * 1000) + sqlite_settings.refresh_token_ttl_s * 1000 + 1
    assert handlers.purge_expired(rt, now_ms=later) == 2
    with rt.db.session() as s:
        assert (
            s.execute(select(otp_codes)).first() is None and s.execute(select(refresh_tokens)).first() is None
        )
    st, _ = await call(client, "POST", "/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert st == 401
