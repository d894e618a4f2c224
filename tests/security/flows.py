"""Records made through the public API, as users would make them (firms, accountants, ...)."""

from __future__ import annotations

import itertools
import uuid

from services.kernel.checkdigits import id_number_check_char, uscc_check_char
from tests.security.harness import Api, User

CITY_CODE = "110105"
_n = itertools.count(1)


def new_uscc() -> str:
    digits = f"{uuid.uuid4().int % 10**8:08d}{next(_n) % 10:01d}"
    first17 = "91" + "110105" + digits
    return first17 + uscc_check_char(first17)


def new_id_number() -> str:
    """A valid 身份证号 nobody has used yet (Beijing 朝阳, born 1990-01-01, a fresh sequence)."""
    first17 = "110105" + "19900101" + f"{uuid.uuid4().int % 1000:03d}"
    return first17 + id_number_check_char(first17)


def firm_body() -> dict:
    return {
        "name": "北京绿环再生资源回收有限公司",
        "uscc": new_uscc(),
        "recycler_filing_no": "京商备2024001",
        "address": "北京市朝阳区建国路1号",
        "city_code": CITY_CODE,
    }


async def pending_firm(api: Api, owner: User) -> str:
    r = await api.call("POST", "/v1/firms", owner, json=firm_body())
    assert r.status == 201, r
    return r.body["id"]


async def verified_firm(api: Api, owner: User) -> tuple[str, User]:
    """A firm verified by an admin (its events delivered); returns the firm id and the owner's new tokens."""
    fid = await pending_firm(api, owner)
    r = await api.call("POST", f"/v1/admin/verifications/firm/{fid}/approve", await api.admin())
    assert r.status == 200, r
    api.drain()
    return fid, await api.refresh(owner)


async def accountant_of(api: Api, firm_id: str, owner: User) -> User:
    user = await api.login()
    r = await api.call("POST", f"/v1/firms/{firm_id}/accountants", owner, json={"user_id": user.user_id})
    assert r.status == 201, r
    api.drain()
    return await api.refresh(user)
