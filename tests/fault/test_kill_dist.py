"""Kill test on the distributed run (`recycle run-dist`: the Kafka-protocol broker, PostgreSQL, one process per
service, each holding that service's HTTP handlers, outbox relay and consumer groups). Bookings → settlements run
through the gateway while a harness SIGKILLs the service processes, every kind, at random moments of their life
(start-up included) and at random gaps, at most one service down at a time; run-dist's supervisor starts each
again. Afterwards every settled booking
has exactly one invoice and at most one payout, every pickup the load drove is settled and paid, and every outbox
row was delivered.

FAULT_KILLS kills (default 6 in `make test`, about a minute; 100 in `make soak`).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import pytest

from services.kernel.outbox import wait_until
from tests.e2e.flow import log_tail

from .dist import (
    RetryingApi,
    answers,
    bookings,
    dist_env,
    run_dist,
    service_processes,
    settle_one_retrying,
    settled_without_one_invoice,
    unique_prefix,
)
from .harness import (
    Killer,
    check_accounting,
    paced_load,
    set_up_actors,
    settled_everywhere,
    sql_accounting,
    wait_for_collector,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

KILLS = int(os.environ.get("FAULT_KILLS", "6"))
RATE = float(os.environ.get("FAULT_DIST_RATE", "2"))  # pickups started a second while the killer works


def test_sigkilling_service_processes_of_run_dist_loses_nothing_and_does_nothing_twice(
    tmp_path, pg_url, redis_url, capsys
):
    prefix = unique_prefix()
    log = tmp_path / "platform.log"
    t_start = time.monotonic()
    with run_dist(dist_env(tmp_path, pg_url, redis_url, prefix), log) as (proc, addr):
        started_s = time.monotonic() - t_start
        api = RetryingApi(addr["gateway"])
        actors = set_up_actors(api)
        pids = [settle_one_retrying(api, actors, wait_for_collector(api, actors))]

        names: dict[int, str] = {}

        def serving(pid: int) -> bool:  # the service's port answers: this pid (its predecessor is dead)
            return answers(addr["services"][names[pid]] + "/healthz")

        def services() -> list[int]:
            """Every service process while all serve; while one is down (starting again), only that one — it may
            be killed again during its start-up; none while two are down. Many services down at once on this
            2-core machine would starve every start-up (each then killed before it ever serves)."""
            found = service_processes(proc.pid)
            names.update(found)
            if len(found) < len(addr["services"]):  # one is between its death and its restart
                return []
            down = [pid for pid, _ in found if not serving(pid)]
            return [pid for pid, _ in found] if not down else down if len(down) == 1 else []

        # half the processes killed 0.3-6 s after they appeared (start-up), half 0.3-6 s after they served
        killer = Killer(
            services, KILLS, min_life_s=0.3, max_life_s=6.0, min_gap_s=0.2, max_gap_s=2.5, ready=serving
        )
        kt = threading.Thread(target=killer.run, daemon=True)
        failures: list[BaseException] = []
        stop = threading.Event()
        load = paced_load(api, actors, RATE, stop, pids, failures, clients=4, settle=settle_one_retrying)
        t0 = time.monotonic()
        kt.start()
        for lt in load:
            lt.start()
        try:
            kt.join()
        finally:
            killer.stop.set()
            stop.set()
            for lt in [kt, *load]:
                lt.join(180)
        t1 = time.monotonic()
        assert not failures, (failures, log_tail(log))
        views = settled_everywhere(api, actors, pids, timeout_s=180 + len(pids) / 2)
        unfinished = {
            p: (v.get("status"), v.get("invoice"), v.get("payout"))
            for p, v in views.items()
            if (v.get("payout") or {}).get("status") not in ("paid", "credited")
        }
        assert unfinished == {}, (unfinished, log_tail(log))
        caught_up_s = time.monotonic() - t1

        def delivered() -> bool:
            acc = sql_accounting(pg_url, prefix, pids)
            return all(total == sent for total, sent in acc["outbox"].values())

        wait_until(delivered, 60, 0.5)
        counts = check_accounting(sql_accounting(pg_url, prefix, pids), pids)
        assert settled_without_one_invoice(pg_url, prefix) == {}
        assert proc.poll() is None, "run-dist stopped"
        by_status = bookings(pg_url, prefix)
    killed = Counter(names.get(pid, "?") for _, pid in killer.made)
    with capsys.disabled():
        print(
            f"\nkill test (run-dist): up in {started_s:.0f}s; {len(killer.made)} SIGKILLs of service processes in "
            f"{t1 - t0:.0f}s under load ({dict(sorted(killed.items()))}); {api.retried} calls tried again, "
            f"{api.lost_bookings} bookings and {api.lost_actions} actions whose reply was lost for good; all "
            f"settled {caught_up_s:.0f}s later; {counts}; bookings by status {by_status}"
        )
    assert len(killer.made) == KILLS
    assert api.lost_bookings == 0, (
        "a booking's retry was told its reply was lost instead of getting its pickup"
    )
    assert api.lost_actions == 0, (
        "an action's retry was told its reply was lost instead of getting the pickup"
    )
    assert len(killed) > 1 or KILLS < 3, "the killer hit one kind of service only"
