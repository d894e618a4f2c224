"""Outage tests: the platform (`recycle serve`: every service, its relays and consumers) under a bookings →
settlements load while a part it depends on goes away and comes back. It recovers by itself: every pickup that
was settled gets exactly one invoice and at most one payout, nothing is parked in a dead-letter topic and every
outbox row is delivered.

- PostgreSQL: the services' databases live in a cluster this test owns (initdb + pg_ctl), stopped mid-stream and
  started again (the event log stays on the session's PostgreSQL, so consumers meet a database outage while
  their records keep arriving: they must pause, not park);
- the broker: the Kafka-protocol broker, its log in an S3 store the test owns (SeaweedFS; tests/support/
  object_store.py says why not PostgreSQL), is frozen (SIGSTOP: every connection hangs, as in a network partition)
  and resumed, then SIGKILLed and started again on the same port and log: producers (the outbox relays) and
  consumers reconnect by themselves.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
from sqlalchemy import create_engine, text

from services.kernel.outbox import wait_until
from tests.e2e.flow import http_get, log_tail, platform_process
from tests.support.object_store import ObjectStore
from tests.support.private_pg import PrivatePostgres
from workers.supervisor import free_port

from .harness import (
    Api,
    Load,
    check_accounting,
    set_up_actors,
    settle_one,
    settled_everywhere,
    sql_accounting,
    sqlite_accounting,
    wait_for_collector,
)
from .test_kill import embedded_env

# `make test`: 6 s, the broker killed once; `make soak`: outages past the relays' and consumers' longest back-off
# (5 s and 30 s), the broker killed and started again several times
OUTAGE_S = float(os.environ.get("FAULT_OUTAGE_S", "6"))
BROKER_RESTARTS = int(os.environ.get("FAULT_BROKER_RESTARTS", "1"))
RATE = 2.0  # pickups started a second (the broker's outages do not stop requests: unpaced, they pile up)
KAFKA_REQUEST_TIMEOUT_MS = 5000
# the broker stays down longer than the producers' delivery time-out (2 request time-outs): records sent before
# the kill expire unacknowledged, the path on which kafka-python's idempotent producer used to stay stuck
BROKER_DOWN_S = max(OUTAGE_S, 2 * KAFKA_REQUEST_TIMEOUT_MS / 1000 + 2)


def _serve_env(tmp, port: int, **extra: str) -> dict[str, str]:  # noqa: ANN001
    env = embedded_env(tmp / "data", port)
    env.update(extra)
    return env


def _through_an_outage(tmp_path, env: dict[str, str], *outages) -> tuple[list[str], dict]:  # noqa: ANN001
    """Start `recycle serve`, settle pickups before, during and after each of `outages` (each returns its
    figures; 15 more pickups must settle after each), wait until all settled."""
    base = f"http://127.0.0.1:{env['PORT']}"
    log = tmp_path / "platform.log"
    figures: dict = {}
    with platform_process(["serve"], env, log) as proc:

        def up() -> bool:
            try:
                return proc.poll() is not None or http_get(base + "/healthz")[0] == 200
            except OSError:
                return False

        assert wait_until(up, 120, 0.2) and proc.poll() is None, log_tail(log)
        api = Api(base)
        actors = set_up_actors(api)
        first = settle_one(api, actors, wait_for_collector(api, actors))
        with Load(api, actors, rate=RATE) as load:
            assert wait_until(lambda: len(load.pids) >= 15, 60, 0.1), log_tail(log)
            for i, outage in enumerate(outages, 1):
                figures.update(outage())
                t = time.monotonic()
                settled_before = len(load.pids)
                assert wait_until(lambda n=settled_before + 15: len(load.pids) >= n, 120, 0.2), log_tail(log)
                # recovered by itself: pickups settled after the outage get their invoice and payout before the
                # next outage begins
                after = load.pids[settled_before : settled_before + 15]
                views = settled_everywhere(api, actors, after, timeout_s=120)
                assert all(_paid(v) for v in views.values()), (outage.__name__, views, log_tail(log))
                figures[f"#{i} next 15 pickups paid after s"] = round(time.monotonic() - t, 1)
        pids = [first, *load.pids]
        views = settled_everywhere(api, actors, pids, timeout_s=180 + len(pids) / 5)
        unfinished = {p: v.get("status") for p, v in views.items() if not _paid(v)}
        assert unfinished == {}, (unfinished, log_tail(log))
        assert proc.poll() is None
    return pids, {"calls refused during the outages": load.failed_calls, **figures}


def _paid(view: dict) -> bool:
    return (view.get("payout") or {}).get("status") in ("paid", "credited")


@pytest.mark.postgres
def test_a_postgres_restart_mid_stream_loses_nothing(tmp_path, pg_url, show_figures):
    pg = PrivatePostgres()
    try:
        pg.start()
        prefix = f"o{uuid.uuid4().hex[:6]}_"
        env = _serve_env(
            tmp_path,
            free_port(),
            DATABASE_URL=pg.url,
            DB_SCHEMA_PREFIX=prefix,
            BUS="dblog",
            EVENT_LOG_URL=pg_url,
        )

        def outage() -> dict:
            t = time.monotonic()
            pg.stop("fast")
            time.sleep(OUTAGE_S)
            pg.start()
            return {"postgres down s": round(time.monotonic() - t, 1)}

        pids, figures = _through_an_outage(tmp_path, env, outage)
        counts = check_accounting(sql_accounting(pg.url, prefix, pids), pids)
        parked = _dblog_parked(pg_url, prefix)
    finally:
        pg.close()
    show_figures(f"outage (PostgreSQL restart): {figures}; {counts}; parked {parked}")
    assert parked == 0


def _dblog_parked(url: str, prefix: str) -> int:
    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            return c.execute(
                text(f"SELECT count(*) FROM \"{prefix}eventlog\".bus_log WHERE topic LIKE 'dlq.%'")
            ).scalar_one()
    finally:
        eng.dispose()


@pytest.mark.kafka
def test_a_broker_outage_mid_stream_loses_nothing(tmp_path, show_figures):
    """The broker keeps its log in an S3 store the test owns, so it can really stop: frozen (SIGSTOP: every
    connection hangs, as in a network partition) and resumed; then SIGKILLed and, after a while, started again
    on the same port on the same log."""
    from workers.broker import BrokerError, start_broker

    with ObjectStore() as s3:
        storage = f"s3://{s3.bucket}/"
        try:
            broker = start_broker(storage=storage, env=s3.env)
        except BrokerError as exc:
            from tests.support.services import missing

            missing("the Kafka-protocol broker", str(exc))
        host, port = broker.bootstrap.rsplit(":", 1)
        brokers = [broker]
        env = _serve_env(
            tmp_path,
            free_port(),
            BUS="kafka",
            KAFKA_BOOTSTRAP=broker.bootstrap,
            KAFKA_REQUEST_TIMEOUT_MS=str(KAFKA_REQUEST_TIMEOUT_MS),
            KAFKA_SESSION_TIMEOUT_MS="6000",
            KAFKA_HEARTBEAT_INTERVAL_MS="1000",
        )

        def freeze() -> dict:
            t = time.monotonic()
            os.kill(broker.process.pid, signal.SIGSTOP)
            time.sleep(OUTAGE_S)
            os.kill(broker.process.pid, signal.SIGCONT)
            return {"broker frozen s": round(time.monotonic() - t, 1)}

        def kill_and_restart() -> dict:
            before = _topics(broker.bootstrap)
            t = time.monotonic()
            brokers[-1].process.kill()
            brokers[-1].stop()
            time.sleep(BROKER_DOWN_S)
            brokers.append(start_broker(host, int(port), storage=storage, env=s3.env))
            down_s = round(time.monotonic() - t, 1)
            after = _topics(broker.bootstrap)
            assert before <= after, f"the restarted broker lost topics: {sorted(before - after)}"
            return {f"broker killed, down s (#{len(brokers) - 1})": down_s, "topics kept": len(after)}

        try:
            pids, figures = _through_an_outage(tmp_path, env, freeze, *[kill_and_restart] * BROKER_RESTARTS)
            counts = check_accounting(sqlite_accounting(tmp_path / "data", pids), pids)
            parked = _kafka_parked(brokers[-1].bootstrap)
        finally:
            for b in brokers:
                b.stop()
    show_figures(
        f"outage (broker frozen, then killed and started again): {figures}; {counts}; parked {parked}"
    )
    assert parked == 0


def _topics(bootstrap: str) -> set[str]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return set(admin.list_topics())
    finally:
        admin.close()


def _kafka_parked(bootstrap: str) -> int:
    from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topics = [t for t in admin.list_topics() if t.startswith("dlq.") and not t.endswith(".replayed")]
    admin.close()
    if not topics:
        return 0
    c = KafkaConsumer(bootstrap_servers=bootstrap)
    parts = [TopicPartition(t, p) for t in topics for p in (c.partitions_for_topic(t) or ())]
    total = sum(c.end_offsets(parts).values())
    c.close()
    return total
