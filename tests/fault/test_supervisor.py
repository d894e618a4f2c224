"""Fix 13: the supervisor starts a crashed process again with back-off, and stops the platform with a clear
message on a crash loop. (The embedded run's end-to-end version is in tests/e2e/test_embedded.py.)"""

from __future__ import annotations

import json
import os
import signal
import sys

from services.kernel.outbox import wait_until
from workers.supervisor import Supervisor

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]
CRASHER = [sys.executable, "-c", "raise SystemExit(3)"]


def test_a_killed_child_is_started_again_after_a_back_off(tmp_path):
    state = tmp_path / "processes.json"
    sup = Supervisor(state_file=str(state), backoff_s=0.3, crash_limit=5, crash_window_s=60)
    try:
        first = sup.spawn("background", SLEEPER, dict(os.environ))
        other = sup.spawn("gateway", SLEEPER, dict(os.environ))
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        assert sup.check() is None
        assert json.loads(state.read_text())["background"]["state"] == "restarting"
        assert sup.children["background"].process.pid == first.pid  # not yet: the back-off runs
        assert wait_until(
            lambda: sup.check() is None and sup.children["background"].process.pid != first.pid, 5, 0.05
        )
        assert json.loads(state.read_text())["background"]["state"] == "up"
        assert sup.children["gateway"].process is other and other.poll() is None  # the others were left alone
    finally:
        sup.stop()
    assert all(p.poll() is not None for _, p in sup.procs)


def test_a_crash_loop_stops_the_platform_with_a_message(tmp_path, capfd):
    sup = Supervisor(state_file=str(tmp_path / "p.json"), backoff_s=0.01, crash_limit=3, crash_window_s=60)
    sup.spawn("gateway", SLEEPER, dict(os.environ))
    sup.spawn("background", CRASHER, dict(os.environ))
    codes: list[int | None] = []
    try:
        assert wait_until(lambda: codes.append(sup.check()) or codes[-1] is not None, 10, 0.02)
        assert codes[-1] == 3
    finally:
        sup.stop()
    err = capfd.readouterr().err
    assert (
        "background exited 3 times within 60s (last exit code 3): a crash loop, stopping the platform" in err
    )
    assert err.count("starting it again") == 2


def test_dead_letters_are_kept_thirty_days_by_default(sqlite_settings):
    """Fix 3: parked records wait for an operator; their topics are not cut after the event log's week."""
    from sqlalchemy import select

    from services.bootstrap import Platform
    from services.kernel.bus.dblog import topics_t

    platform = Platform(sqlite_settings).prepare()
    try:
        with platform.bus.db.engine.connect() as c:  # type: ignore[attr-defined]
            kept = dict(c.execute(select(topics_t.c.name, topics_t.c.retention_hours)).all())
    finally:
        platform.stop()
    parked = {t: h for t, h in kept.items() if t.startswith("dlq.")}
    assert parked and all(h >= 30 * 24 for h in parked.values()), parked
