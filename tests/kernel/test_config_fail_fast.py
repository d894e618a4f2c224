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
