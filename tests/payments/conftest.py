"""Fixtures of the payments tests: the adapters of the contract suite (localstripe, one per session, is a fixture
of tests/conftest.py: listings' orders run against it too).

`case` is parametrized over both adapters: "sandbox" (the embedded default) and "stripe" (the official SDK against
localstripe), each on SQLite and on PostgreSQL. `payouts_case` is parametrized the same way for the payout paths; localstripe has no Connect
accounts or transfers, so its Stripe run pays out on the sandbox beside it — the case id says so
("stripe-no-connect-on-sandbox"), decided by the capability flag `CONNECT_PAYOUTS`, not by a skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.payments.ports import CONNECT_PAYOUTS

from .support import LOCALSTRIPE_LACKS, Case, build_case, payments_settings

ADAPTERS = ["sandbox", "stripe"]
PAYOUT_IDS = ["sandbox", "stripe-no-connect-on-sandbox" if CONNECT_PAYOUTS in LOCALSTRIPE_LACKS else "stripe"]
# the contract suite runs each adapter on both databases (PostgreSQL: the `postgres` marker, skipped without one)
CASES = [
    pytest.param(
        (a, db),
        id=a if db == "sqlite" else f"{a}-postgres",
        marks=[pytest.mark.postgres] if db == "postgres" else [],
    )
    for db in ("sqlite", "postgres")
    for a in ADAPTERS
]
PAYOUT_CASES = [
    pytest.param(
        (a, db),
        id=i if db == "sqlite" else f"{i}-postgres",
        marks=[pytest.mark.postgres] if db == "postgres" else [],
    )
    for db in ("sqlite", "postgres")
    for a, i in zip(ADAPTERS, PAYOUT_IDS)
]


def close_case(c: Case) -> None:
    c.payments.provider.close()
    c.platform.stop()


def make_case(request: pytest.FixtureRequest, adapter: str, base_settings) -> Case:  # noqa: ANN001
    url = request.getfixturevalue("localstripe").url if adapter == "stripe" else None
    return build_case(adapter, payments_settings(base_settings, adapter, url))


def _db_settings(request: pytest.FixtureRequest, db: str):  # noqa: ANN202
    return request.getfixturevalue("sqlite_settings" if db == "sqlite" else "pg_settings")


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> Iterator[Case]:
    adapter, db = request.param
    c = make_case(request, adapter, _db_settings(request, db))
    yield c
    close_case(c)


@pytest.fixture(params=PAYOUT_CASES)
def payouts_case(request: pytest.FixtureRequest, tmp_path) -> Iterator[Case]:  # noqa: ANN001
    """The adapter for payouts: itself when it has Connect payouts, else the sandbox beside it."""
    adapter, db = request.param
    c = make_case(request, adapter, _db_settings(request, db))
    if c.has(CONNECT_PAYOUTS):
        yield c
        close_case(c)
        return
    base = c.settings.model_copy(
        update={
            "data_dir": tmp_path / "payouts-sandbox",
            "db_schema_prefix": c.settings.db_schema_prefix + "po_",
        }
    )
    twin = build_case(f"{c.name}→sandbox", payments_settings(base, "sandbox"))
    c.twins["payouts"] = twin
    yield twin
    close_case(twin)
    close_case(c)
