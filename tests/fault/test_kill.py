"""Kill test: bookings → settlements run through the public API while a harness SIGKILLs the processes that carry
the events (the embedded run's background process: every outbox relay and consumer group) at random moments.
The supervisor starts it again each time. Afterwards every pickup has exactly one invoice and at most one payout,
and every outbox row was delivered.

`make test` makes FAULT_KILLS kills (default 10, to keep the suite short: about 90 s); `make soak` makes 100.
"""

from __future__ import annotations

import os
import threading
import time

from services.kernel.outbox import wait_until
from tests.e2e.flow import http_get, log_tail, platform_process
from workers.supervisor import free_port

from .harness import (
    Api,
    Killer,
    check_accounting,
    children,
    paced_load,
    set_up_actors,
    settle_one,
    settled_everywhere,
    sqlite_accounting,
    wait_for_collector,
)

KILLS = int(os.environ.get("FAULT_KILLS", "10"))
RATE = float(os.environ.get("FAULT_RATE", "5"))  # settled pickups a second while the killer works
SECRETS = {"JWT_SECRET": "fault-test-" + "x" * 40, "PII_KEY": "dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0="}


def embedded_env(tmp, port: int) -> dict[str, str]:  # noqa: ANN001 - a Path
    env = dict(
        os.environ,
        DATA_DIR=str(tmp),
        PORT=str(port),
        ENV="dev",
        ADMIN_PHONES="13900000001",
        RATE_LIMIT_PER_MINUTE="100000",
        RATE_LIMIT_IP_PER_MINUTE="100000",
        # the harness kills far more often than a crash loop would: restart quickly, never give up
        SUPERVISOR_BACKOFF_S="0.2",
        SUPERVISOR_CRASH_LIMIT="100000",
        SUPERVISOR_CRASH_WINDOW_S="0.1",
        BOOKING_SLOT_CAPACITY="100000",
        **SECRETS,
    )
    for name in (
        "DATABASE_URL",
        "EVENT_LOG_URL",
        "BUS",
        "SERVICES",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
    ):
        env.pop(name, None)
    return env


def test_sigkilling_the_event_processes_loses_nothing_and_does_nothing_twice(tmp_path, show_figures):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "platform.log"
    data = tmp_path / "data"
    with platform_process(["run"], embedded_env(data, port), log) as proc:
        api = Api(base)

        def up() -> bool:
            try:
                return proc.poll() is not None or http_get(base + "/healthz")[0] == 200
            except OSError:
                return False

        assert wait_until(up, 120, 0.2) and proc.poll() is None, log_tail(log)
        actors = set_up_actors(api)
        first = settle_one(api, actors, wait_for_collector(api, actors))

        def background() -> list[int]:
            return [pid for pid, args in children(proc.pid) if args.endswith(" background")]

        killer = Killer(background, KILLS)
        t = threading.Thread(target=killer.run, daemon=True)
        t.start()
        pids = [first]
        failures: list[BaseException] = []
        stop = threading.Event()
        load = paced_load(api, actors, RATE, stop, pids, failures)
        t0 = time.monotonic()
        for lt in load:
            lt.start()
        try:
            t.join()  # the load runs for as long as the killer works
        finally:
            killer.stop.set()
            stop.set()
            for lt in [t, *load]:
                lt.join(60)
        assert not failures, failures
        t1 = time.monotonic()
        views = settled_everywhere(api, actors, pids, timeout_s=180 + len(pids) / 5)
        caught_up_s = time.monotonic() - t1
        unfinished = {
            p: (v.get("status"), v.get("invoice"), v.get("payout"), v.get("withheld_fen"))
            for p, v in views.items()
            if (v.get("payout") or {}).get("status") not in ("paid", "credited")
        }
        assert unfinished == {}, (unfinished, log_tail(log))
        assert proc.poll() is None, "the platform stopped"
        counts = check_accounting(sqlite_accounting(data, pids), pids)
    show_figures(
        f"kill test (embedded): {len(killer.made)} SIGKILLs of the background process in {t1 - t0:.0f}s "
        f"under load; all settled {caught_up_s:.0f}s later; {counts}"
    )
    assert len(killer.made) == KILLS
