"""Fix 4: SMS pumping (OWASP API4/API6, unrestricted access to a sensitive business flow), in both runs.

Every login code costs an SMS. Besides the per-phone limit, the gateway keeps a budget per client address
(OTP_PER_CLIENT_LIMIT per 10 minutes) and for the whole platform (OTP_GLOBAL_LIMIT per minute), in memory
embedded and in Redis distributed: 25 numbers from one client no longer get 25 codes.
"""

from __future__ import annotations

import aiohttp
import pytest

from services.accounts.sms import sms_of
from tests.security.harness import MODES, Api, Topology, new_phone, settings_for

PER_CLIENT, GLOBAL = 5, 12


@pytest.fixture(scope="module", params=MODES)
def small(request, tmp_path_factory):  # noqa: ANN001, ANN201
    mode = request.param
    redis_url = request.getfixturevalue("redis_url") if mode == "distributed" else None
    mp = pytest.MonkeyPatch()
    mp.setenv("TRUST_FORWARDED_FOR", "true")  # the test plays many clients through X-Forwarded-For
    settings = settings_for(
        mode,
        tmp_path_factory.mktemp(f"sms-{mode}"),
        redis_url,
        otp_per_client_limit=PER_CLIENT,
        otp_global_limit=GLOBAL,
    )
    try:
        with Topology(mode, settings, services=["accounts"]) as topo:
            yield topo
    finally:
        mp.undo()


async def _otp(api: Api, client_ip: str) -> tuple[int, dict, dict]:
    r = await api.call(
        "POST", "/v1/auth/otp", json={"phone": new_phone()}, headers={"X-Forwarded-For": client_ip}
    )
    return r.status, r.body, r.headers


async def test_budgets_per_client_and_for_the_platform(small: Topology) -> None:
    sms = sms_of(small.platform["accounts"])
    before = len(sms.messages())
    async with aiohttp.ClientSession() as session:
        api = Api(small, session)
        sent = [await _otp(api, "203.0.113.7") for _ in range(25)]
        assert [s for s, _, _ in sent].count(202) == PER_CLIENT
        status, body, headers = sent[-1]
        assert status == 429 and body["reason"] == "otp_budget" and body["budget"] == "client", body
        assert int(headers["Retry-After"]) > 0
        assert headers["Content-Type"].startswith("application/problem+json")

        # other clients still get codes, until the platform's budget per minute is spent
        others = [await _otp(api, f"198.51.100.{i}") for i in range(1, 12)]
        assert [s for s, _, _ in others].count(202) == GLOBAL - PER_CLIENT
        status, body, headers = others[-1]
        assert status == 429 and body["budget"] == "global" and int(headers["Retry-After"]) >= 1, body
    assert len(sms.messages()) - before == GLOBAL  # what was refused sent nothing


class SliderPassed:
    """What a production captcha check does with the provider's ticket; here: the ticket "human-ok" passes."""

    async def passed(self, request) -> bool:  # noqa: ANN001
        return request.headers.get("X-Captcha-Token") == "human-ok"


@pytest.mark.parametrize("mode", MODES)
async def test_the_captcha_hook_lets_a_human_past_the_client_budget(mode: str, request, tmp_path) -> None:  # noqa: ANN001
    redis_url = request.getfixturevalue("redis_url") if mode == "distributed" else None
    settings = settings_for(mode, tmp_path, redis_url, otp_per_client_limit=1, otp_global_limit=3)
    with Topology(mode, settings, services=["accounts"]) as topo:
        assert topo.gateway_app is not None
        topo.gateway_app["gateway"].rl.human_check = SliderPassed()
        async with aiohttp.ClientSession() as session:
            api = Api(topo, session)
            ok = {"Content-Type": "application/json"}
            assert (await api.call("POST", "/v1/auth/otp", json={"phone": new_phone()})).status == 202
            r = await api.call("POST", "/v1/auth/otp", json={"phone": new_phone()})
            assert r.status == 429 and r.body["budget"] == "client", r
            r = await api.call(
                "POST",
                "/v1/auth/otp",
                json={"phone": new_phone()},
                headers=ok | {"X-Captcha-Token": "forged"},
            )
            assert r.status == 429, r
            for _ in range(2):
                r = await api.call(
                    "POST",
                    "/v1/auth/otp",
                    json={"phone": new_phone()},
                    headers=ok | {"X-Captcha-Token": "human-ok"},
                )
                assert r.status == 202, r
            # the global budget (the cost ceiling) is never bypassed
            r = await api.call(
                "POST",
                "/v1/auth/otp",
                json={"phone": new_phone()},
                headers=ok | {"X-Captcha-Token": "human-ok"},
            )
            assert r.status == 429 and r.body["budget"] == "global", r
