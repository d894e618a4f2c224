"""The dev environment sends no SMS (the code is in the reply), so its per-client OTP budget is lifted unless set:
a user walking through the docs from one shell logs in a dozen phones within ten minutes."""

from __future__ import annotations

import pytest

from services.kernel.settings import Settings


def test_dev_lifts_the_per_client_otp_budget_unless_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTP_PER_CLIENT_LIMIT", raising=False)  # the suite's conftest raises it for everyone
    assert Settings(env="dev").otp_per_client_limit == 1000
    assert Settings(env="test").otp_per_client_limit == 10
    assert Settings(env="prod").otp_per_client_limit == 10
    monkeypatch.setenv("OTP_PER_CLIENT_LIMIT", "7")
    assert Settings(env="dev").otp_per_client_limit == 7
    assert Settings(env="dev", otp_per_client_limit=3).otp_per_client_limit == 3
