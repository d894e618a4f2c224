"""Bad configuration stops start-up at once with a message that says what to fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from services.bootstrap import Platform
from services.kernel.settings import ConfigError, Settings

DEAD_PG = "postgresql://nobody@127.0.0.1:1/nothing"


def test_unreachable_event_log_database(tmp_path):
    s = Settings(env="test", data_dir=tmp_path, event_log_url=DEAD_PG)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="EVENT_LOG_URL"):
        Platform(s)
    assert time.monotonic() - t0 < 10


def test_unreachable_service_database(tmp_path):
    s = Settings(env="test", data_dir=tmp_path, database_url=DEAD_PG)
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Platform(s).prepare()


def test_unknown_service_name(tmp_path):
    with pytest.raises(ConfigError, match="SERVICES names unknown services"):
        Platform(Settings(env="test", data_dir=tmp_path, services="booking,nope"))


def test_prod_without_secrets_refuses(tmp_path):
    with pytest.raises(ConfigError, match="JWT_SECRET"):
        Settings(env="prod", data_dir=tmp_path).secret("jwt_secret")


def test_serve_exits_with_a_message(tmp_path):
    env = dict(os.environ, DATA_DIR=str(tmp_path), DATABASE_URL=DEAD_PG, PORT="1")
    p = subprocess.run(
        [sys.executable, "-m", "workers.cli", "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert p.returncode != 0
    assert "configuration error" in p.stderr and "DATABASE_URL" in p.stderr


@pytest.mark.parametrize(
    "name", ["gateway_redis_prefix", "trust_forwarded_for", "TRUST_FORWARDED_FOR", "jwt_secrte"]
)
def test_a_setting_the_platform_settings_do_not_hold_is_refused_not_dropped(tmp_path, name):
    """Passed to the platform `Settings` (built or copied), a gateway or service setting or a typo used to vanish."""
    with pytest.raises(ConfigError, match=f"not Settings fields: {name}"):
        Settings(env="test", data_dir=tmp_path, **{name: "x"})
    with pytest.raises(ConfigError, match=f"not Settings fields: {name}"):
        Settings(env="test", data_dir=tmp_path).model_copy(update={name: "x"})
    assert Settings(env="test", data_dir=tmp_path).model_copy(update={"port": 9}).port == 9


def test_a_gateway_or_service_setting_that_does_not_exist_is_refused(tmp_path):
    from gateway.settings import GatewaySettings
    from services.listings.settings import ListingsSettings

    with pytest.raises(ConfigError, match="not ListingsSettings fields: platform_fee_bsp"):
        ListingsSettings(platform_fee_bsp=100)
    assert ListingsSettings(platform_fee_bps=100).platform_fee_bps == 100
    with pytest.raises(ConfigError, match="not GatewaySettings fields: redis_prefix"):
        GatewaySettings().model_copy(update={"redis_prefix": "x"})


def test_the_gateways_own_settings_are_honoured_from_the_environment(tmp_path, monkeypatch):
    """(tests/security/test_sms_pumping.py drives TRUST_FORWARDED_FOR through HTTP.)"""
    from gateway.middlewares import build

    monkeypatch.setenv("GATEWAY_REDIS_PREFIX", "shop:gw:")
    monkeypatch.setenv("TRUST_FORWARDED_FOR", "true")
    gateway = build(Settings(env="test", data_dir=tmp_path))
    assert gateway.gw.gateway_redis_prefix == "shop:gw:" and gateway.gw.trust_forwarded_for
