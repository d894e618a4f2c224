"""The embedded run as its user starts it (`recycle run`): the gateway, the background process (relays and
consumers) and the Celery worker, on SQLite in a fresh data directory. Driven only through the public API."""
from __future__ import annotations

import os
import subprocess

import pytest

from services.kernel.outbox import wait_until
from tests.e2e.flow import (
    http_get,
    log_tail,
    platform_process,
    whole_pickup_flow,
    whole_second_hand_flow,
)
from workers.supervisor import free_port


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("embedded")
    port = free_port()
    env = dict(os.environ, DATA_DIR=str(tmp), PORT=str(port), ENV="dev", ADMIN_PHONES="13900000001",
               JWT_SECRET="embedded-test-" + "x" * 40, PII_KEY="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=")
    for name in ("DATABASE_URL", "EVENT_LOG_URL", "BUS", "SERVICES", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    base = f"http://127.0.0.1:{port}"
    log = tmp / "platform.log"
    with platform_process(["run"], env, log) as proc:
        def up() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return http_get(base + "/healthz")[0] == 200
            except OSError:
                return False

        if not wait_until(up, timeout_s=120, interval_s=0.2) or proc.poll() is not None:
            raise AssertionError("recycle run did not start:\n" + log_tail(log))
        yield {"gateway": base, "log": log, "pid": proc.pid}


def test_embedded_run_has_its_three_processes(embedded):
    """Gateway (requests), background (relays and consumers), Celery (timers and exports)."""
    def children() -> str:
        out = subprocess.run(["ps", "-ww", "-o", "args=", "--ppid", str(embedded["pid"])], capture_output=True, text=True)
        return out.stdout

    assert wait_until(lambda: "background" in children() and "celery" in children(), 60, 0.2), children()
    assert "serve --no-background" in children()


def test_whole_pickup_flow_on_the_embedded_run(embedded):
    """Every event hop (accounts → booking, booking → invoicing → booking → payments → booking) is carried by the
    background process: the gateway process runs none of it."""
    whole_pickup_flow(embedded["gateway"])


def test_whole_second_hand_flow_on_the_embedded_run(embedded):
    """A seller lists, a buyer finds it with a two-character query, pays in the sandbox (escrow), receives and
    reviews, and the seller is paid: listings ↔ payments over the embedded log, the indexer in the background."""
    whole_second_hand_flow(embedded["gateway"])
