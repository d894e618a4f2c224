"""Event throughput through the whole reliable path: outbox → relay → bus → consumer (effect + inbox).

Measured in one run, on this machine:
  1. the embedded log on SQLite (the default one-machine run), against its 2,000 events/s target;
  2. Kafka (a tansu broker this script starts), through the same outbox, relay and consumer runner;
  3. the ceiling: raw kafka-python producer → consumer on the same broker with the same payloads.
It prints each figure and the ratio Kafka path / raw ceiling (target ≥ 0.5).

    .venv/bin/python bench/bus.py [--events 20000] [--rounds 3] [--only embedded,kafka,raw]

Each pipeline runs its relay and its consumer in two threads of this process, as a service host does; the
outbox is filled before the clock starts, so the figure is the shipping and handling rate, not the write rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Column, Integer, MetaData, String, Table, func, select  # noqa: E402

from services.kernel.bus.factory import make_bus  # noqa: E402
from services.kernel.bus.port import TopicSpec  # noqa: E402
from services.kernel.consumer import ConsumerRunner, ConsumerSpec  # noqa: E402
from services.kernel.db import Database, UnitOfWork  # noqa: E402
from services.kernel.events import Envelope, Event  # noqa: E402
from services.kernel.outbox import Relay, inbox_t, kernel_metadata  # noqa: E402
from services.kernel.settings import Settings  # noqa: E402

EMBEDDED_TARGET = 2000.0
RATIO_TARGET = 0.5
PARTITIONS = 6

effects_md = MetaData()
received_t = Table(
    "bench_weighings_received",
    effects_md,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("pickup_id", String(64), nullable=False),
    Column("weight_g", Integer, nullable=False),
)


class PickupWeighed(Event):
    type = "cn.recycle.bench.pickup.weighed.v1"
    topic = "bench.pickup"
    key_field = "pickup_id"
    source = "/bench/booking"
    doc = "Benchmark event."

    pickup_id: str
    category: str
    weight_g: int
    unit_price_fen: int


# Built once: a handler that builds its statement per event spends more time in SQLAlchemy than in the bus.
INSERT_RECEIVED = received_t.insert()


def on_weighed(env: Envelope, uow: UnitOfWork) -> None:
    """The effect: one row in the consuming service's own table, in the inbox's transaction."""
    uow.session.execute(
        INSERT_RECEIVED, {"event_id": env.id, "pickup_id": env.subject, "weight_g": env.data["weight_g"]}
    )


def fill_outbox(db: Database, n: int, per_uow: int = 200) -> float:
    t0 = time.perf_counter()
    for start in range(0, n, per_uow):
        with UnitOfWork(db) as uow:
            for i in range(start, min(start + per_uow, n)):
                uow.emit(
                    PickupWeighed(
                        pickup_id=f"pk-{i % 5000:05d}",
                        category="废纸/黄纸板",
                        weight_g=1000 + i % 997,
                        unit_price_fen=120,
                    )
                )
    return n / (time.perf_counter() - t0)


def pipeline(settings: Settings, n: int, label: str, compression: str | None = None) -> float:
    """Events/s from the first relayed row to the last handled event."""
    bus = make_bus(settings)
    if settings.bus == "kafka":
        bus.compression_type = compression  # type: ignore[attr-defined]  # before the lazy producer exists
    bus.ensure_topics([TopicSpec(PickupWeighed.topic, PARTITIONS)])
    producer_db = Database(settings.db_url("booking"), schema=settings.db_schema("booking"))
    consumer_db = Database(settings.db_url("pricing"), schema=settings.db_schema("pricing"))
    for db in (producer_db, consumer_db):
        kernel_metadata.create_all(db.engine)
    effects_md.create_all(consumer_db.engine)
    write_rate = fill_outbox(producer_db, n)

    relay = Relay(
        producer_db,
        bus,
        "booking",
        batch_size=settings.relay_batch_size,
        idle_sleep_s=settings.relay_idle_sleep_s,
    )
    runner = ConsumerRunner(
        ConsumerSpec("bench-pricing", [PickupWeighed.topic], {PickupWeighed.type: on_weighed}),
        consumer_db,
        bus,
    )
    runner.run_once(timeout_s=3.0)  # join the group before the clock starts (nothing is on the topic yet)

    stop = threading.Event()
    t0 = time.perf_counter()
    threads = [
        threading.Thread(target=relay.run, args=(stop,), name="relay"),
        threading.Thread(target=runner.run, args=(stop,), name="consumer"),
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    while runner.handled < n and time.monotonic() < deadline:
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    stop.set()
    for t in threads:
        t.join()
    with consumer_db.session(readonly=True) as s:
        effects = s.execute(select(func.count()).select_from(received_t)).scalar_one()
        inbox = s.execute(select(func.count()).select_from(inbox_t)).scalar_one()
    pending = relay.pending()
    bus.close()
    producer_db.dispose()
    consumer_db.dispose()
    assert effects == inbox == n and pending == 0, (effects, inbox, pending)
    rate = n / elapsed
    print(
        f"  {label:<34} {rate:>9,.0f} events/s   ({n:,} events in {elapsed:.1f}s; "
        f"outbox writes {write_rate:,.0f}/s)",
        flush=True,
    )
    return rate


def raw_kafka(bootstrap: str, n: int, producer_config: dict, run: int = 0) -> float:
    """The ceiling: kafka-python alone, same broker, payload sizes and producer settings, no database."""
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    topic = f"bench.raw.{run}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
    admin.close()
    payloads = [
        (
            f"pk-{i % 5000:05d}".encode(),
            Envelope.wrap(
                PickupWeighed(
                    pickup_id=f"pk-{i % 5000:05d}",
                    category="废纸/黄纸板",
                    weight_g=1000 + i % 997,
                    unit_price_fen=120,
                )
            ).to_bytes(),
        )
        for i in range(n)
    ]
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{run}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=250,
        fetch_max_wait_ms=100,
    )
    deadline = time.monotonic() + 10
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(100)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, **producer_config
    )

    def produce() -> None:
        for key, value in payloads:
            producer.send(topic, value=value, key=key, headers=[("ce_id", b"x")])
        producer.flush()

    t0 = time.perf_counter()
    th = threading.Thread(target=produce)
    th.start()
    got = 0
    deadline = time.monotonic() + 300
    while got < n and time.monotonic() < deadline:
        batch = consumer.poll(200, max_records=500)
        got += sum(len(v) for v in batch.values())
        if batch:
            consumer.commit()
    elapsed = time.perf_counter() - t0
    th.join()
    producer.close()
    consumer.close()
    rate = got / elapsed
    print(
        f"  {'raw kafka-python producer→consumer':<34} {rate:>9,.0f} events/s   ({got:,} events in {elapsed:.1f}s)",
        flush=True,
    )
    return rate


def crc_note() -> str:
    try:
        from kafka.record.util import crc32c_c
    except ImportError:  # pragma: no cover - other kafka-python versions
        return "unknown"
    return "C (crc32c)" if crc32c_c is not None else "pure Python (the `crc32c` package is not installed)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="runs of each measurement, interleaved; the best of each is compared (a shared machine "
        "is noisy, and noise only ever slows a run down)",
    )
    ap.add_argument("--only", default="embedded,kafka,raw")
    ap.add_argument(
        "--compression",
        default="settings",
        choices=["settings", "gzip", "none"],
        help="Kafka batch compression for both the adapter and the raw ceiling "
        "(default: KAFKA_COMPRESSION from the settings)",
    )
    args = ap.parse_args()
    which = set(args.only.split(","))
    runs: dict[str, list[float]] = {"embedded": [], "kafka": [], "raw": []}
    print(
        f"event bus throughput: {args.events:,} events per run, {args.rounds} rounds; "
        f"kafka-python CRC32C check: {crc_note()}",
        flush=True,
    )
    if "embedded" in which:
        for _ in range(args.rounds):
            with tempfile.TemporaryDirectory() as d:
                runs["embedded"].append(
                    pipeline(
                        Settings(env="test", data_dir=Path(d), bus="dblog", event_log_partitions=PARTITIONS),
                        args.events,
                        "embedded log (SQLite) path",
                    )
                )
    if which & {"kafka", "raw"}:
        from services.kernel.bus.kafka import KafkaBus
        from workers.broker import start_broker

        defaults = KafkaBus.__init__.__kwdefaults__ or {}
        producer_config = {k: defaults[k] for k in ("linger_ms", "batch_size")}
        chosen = Settings().kafka_compression if args.compression == "settings" else args.compression
        producer_config["compression_type"] = None if chosen == "none" else chosen
        print(
            f"  producer settings (adapter and raw alike): acks=all, idempotent, {producer_config}",
            flush=True,
        )
        with start_broker() as broker:
            for i in range(args.rounds):
                order = ["kafka", "raw"] if i % 2 == 0 else ["raw", "kafka"]
                for what in order:
                    if what not in which:
                        continue
                    if what == "raw":
                        runs["raw"].append(raw_kafka(broker.bootstrap, args.events, producer_config, run=i))
                        continue
                    PickupWeighed.topic = f"bench.pickup.{i}"  # a fresh topic per run on the shared broker
                    with tempfile.TemporaryDirectory() as d:
                        settings = Settings(
                            env="test",
                            data_dir=Path(d),
                            bus="kafka",
                            kafka_bootstrap=broker.bootstrap,
                            kafka_session_timeout_ms=2000,
                            kafka_heartbeat_interval_ms=250,
                            kafka_request_timeout_ms=10000,
                            kafka_default_partitions=PARTITIONS,
                        )
                        runs["kafka"].append(
                            pipeline(
                                settings,
                                args.events,
                                "Kafka path (tansu)",
                                producer_config["compression_type"],
                            )
                        )
    best = {k: max(v) for k, v in runs.items() if v}
    print("\nbest of each:")
    for k, label in (
        ("embedded", "embedded log (SQLite) path"),
        ("kafka", "Kafka path (tansu)"),
        ("raw", "raw kafka-python producer→consumer"),
    ):
        if k in best:
            print(f"  {label:<34} {best[k]:>9,.0f} events/s")
    if "embedded" in best:
        r = best["embedded"] / EMBEDDED_TARGET
        print(
            f"  embedded / target {EMBEDDED_TARGET:,.0f} events/s  = {r:.2f}  "
            f"({'meets' if r >= 1 else 'BELOW'} target)"
        )
    if "kafka" in best and "raw" in best:
        r = best["kafka"] / best["raw"]
        per_round = ", ".join(f"{a / b:.2f}" for a, b in zip(runs["kafka"], runs["raw"]))
        print(
            f"  Kafka path / raw kafka-python   = {r:.2f}  "
            f"({'meets' if r >= RATIO_TARGET else 'BELOW'} target {RATIO_TARGET}; per round: {per_round})"
        )


if __name__ == "__main__":
    main()
