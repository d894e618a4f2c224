"""The admin's dead-letter routes (gateway/admin.py) over plain HTTP: who may call them and what they refuse."""

from __future__ import annotations


def test_only_admins_see_and_replay_dead_letters(platform) -> None:
    api, admin = platform["api"], platform["admin"]
    firm = platform["prices"].firm_tokens[0]
    assert api.call("GET", "/v1/admin/dead-letters", status=401)["status"] == 401
    assert api.call("GET", "/v1/admin/dead-letters", firm, status=403)["reason"] == "role_required"
    assert api.call("POST", "/v1/admin/dead-letters/invoicing.pickups/replay", firm, {}, status=403)
    groups = {g["group"]: g["parked"] for g in api.call("GET", "/v1/admin/dead-letters", admin)["items"]}
    assert {"invoicing.pickups", "pricing.observations", "booking.saga"} <= set(groups)
    assert all(isinstance(n, int) and n >= 0 for n in groups.values())
    api.call("GET", "/v1/admin/dead-letters/no.such.group", admin, status=404)
    bad = api.call(
        "POST", "/v1/admin/dead-letters/invoicing.pickups/replay", admin, {"only": ["x@1"]}, status=400
    )
    assert bad["errors"][0]["field"] == "only"
    api.call("POST", "/v1/admin/dead-letters/invoicing.pickups/replay", admin, {"nope": 1}, status=400)
    # replaying only records that are not there sends nothing
    out = api.call("POST", "/v1/admin/dead-letters/invoicing.pickups/replay", admin, {"only": ["0@999999"]})
    assert out == {"group": "invoicing.pickups", "replayed": 0}
