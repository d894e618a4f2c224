"""No event lost, none handled twice: the outbox, the relay and the consumer's inbox across real process crashes,
duplicate deliveries and a poison message — on every bus adapter."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.kernel.bus.port import Record
from services.kernel.consumer import ConsumerRunner, ConsumerSpec, list_dead_letters, replay_dead_letters
from services.kernel.db import Database, UnitOfWork
from services.kernel.events import Envelope, Event
from services.kernel.outbox import Relay, outbox_t

from .outbox_proc import SERVICE
from .support import BusCase, count_effects, record_effect, registered_parcel_event, settings_env

ROOT = Path(__file__).resolve().parents[2]
N = 40


def run_proc(case: BusCase, *args: str, fault: str | None = None) -> int:
    env = settings_env(case.settings)
    if fault:
        env["RELAY_FAULT"] = fault
    proc = subprocess.run(
        [sys.executable, "-m", "tests.bus.outbox_proc", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode


def pending(db: Database) -> int:
    with db.session(readonly=True) as s:
        return s.execute(
            select(func.count()).select_from(outbox_t).where(outbox_t.c.sent_at.is_(None))
        ).scalar_one()


def on_the_bus(case: BusCase, topic: str) -> int:
    return sum(case.bus.end_offsets(topic).values())


def consume_everything(
    case: BusCase, runner: ConsumerRunner, topic: str, timeout_s: float = 20, expected: int | None = None
) -> int:
    """Run the consumer until it has polled `expected` records (default: all the topic holds); returns how many
    it polled."""
    total = on_the_bus(case, topic) if expected is None else expected
    polled = 0
    deadline = time.monotonic() + timeout_s
    while polled < total and time.monotonic() < deadline:
        polled += runner.run_once(timeout_s=0.2)
    assert polled >= total, f"consumed {polled} of {total} records"
    return polled


def runner_for(
    case: BusCase,
    db: Database,
    topic: str,
    event_type: str,
    handler=record_effect,  # noqa: ANN001
    max_attempts: int = 5,
) -> ConsumerRunner:
    spec = ConsumerSpec(case.group("billing"), [topic], {event_type: handler})
    runner = ConsumerRunner(spec, db, case.bus, max_attempts=max_attempts, backoff_s=0.01)
    case._subs.append(runner.subscription)
    return runner


@pytest.fixture
def event(bus_case: BusCase) -> Iterator[type[Event]]:
    with registered_parcel_event(bus_case.prefix) as cls:
        yield cls


def test_process_killed_between_commit_and_publish_loses_nothing(
    bus_case: BusCase, event: type[Event]
) -> None:
    topic = bus_case.topic("test.parcel")
    producer_db = bus_case.service_db(SERVICE)  # creates the tables the subprocesses use

    assert run_proc(bus_case, "write-and-die", bus_case.prefix, str(N)) == -signal.SIGKILL
    assert pending(producer_db) == N  # committed with the state change...
    assert on_the_bus(bus_case, topic) == 0  # ...and not yet published when the process died

    assert run_proc(bus_case, "relay", bus_case.prefix) == 0  # the restarted service's relay ships them
    assert pending(producer_db) == 0 and on_the_bus(bus_case, topic) == N

    consumer_db = bus_case.service_db("billing")
    consume_everything(bus_case, runner_for(bus_case, consumer_db, topic, event.type), topic)
    assert count_effects(consumer_db) == (N, N)


def test_relay_killed_after_publish_before_marking_sends_twice_but_effects_happen_once(
    bus_case: BusCase, event: type[Event]
) -> None:
    topic = bus_case.topic("test.parcel")
    producer_db = bus_case.service_db(SERVICE)
    with UnitOfWork(producer_db) as uow:
        for i in range(N):
            uow.emit(event(parcel_id=f"parcel-{i % 7}", weight_g=1000 + i))

    assert run_proc(bus_case, "relay", bus_case.prefix, fault="kill_after_publish") == -signal.SIGKILL
    assert on_the_bus(bus_case, topic) == N and pending(producer_db) == N  # published, never marked sent

    assert run_proc(bus_case, "relay", bus_case.prefix) == 0  # restarted: ships the same rows again
    assert on_the_bus(bus_case, topic) == 2 * N and pending(producer_db) == 0

    consumer_db = bus_case.service_db("billing")
    runner = runner_for(bus_case, consumer_db, topic, event.type)
    assert consume_everything(bus_case, runner, topic) >= 2 * N
    assert count_effects(consumer_db) == (N, N)  # every event once in effect: nothing lost, nothing doubled
    assert runner.handled == N


def test_every_event_delivered_twice_takes_effect_once(bus_case: BusCase, event: type[Event]) -> None:
    topic = bus_case.topic("test.parcel")
    producer_db = bus_case.service_db(SERVICE)
    with UnitOfWork(producer_db) as uow:
        for i in range(N):
            uow.emit(event(parcel_id=f"parcel-{i % 7}", weight_g=1000 + i))
    relay = Relay(producer_db, bus_case.bus, SERVICE)
    assert relay.relay_once() == N
    sent = [r for p in range(bus_case.bus.partitions(topic)) for r in bus_case.bus.read(topic, p, 0)]
    # a second copy of everything: in one batch with the first, and again in later batches
    bus_case.bus.publish(sent[: N // 2])
    bus_case.bus.publish(sent[N // 2 :] + sent[: N // 4])

    consumer_db = bus_case.service_db("billing")
    runner = runner_for(bus_case, consumer_db, topic, event.type)
    consume_everything(bus_case, runner, topic)
    assert count_effects(consumer_db) == (N, N)

    # an operator replays the whole topic for the group: still once
    for p in range(bus_case.bus.partitions(topic)):
        runner.subscription.seek(topic, p, 0)
    replayed = 0
    deadline = time.monotonic() + 10
    while replayed < on_the_bus(bus_case, topic) and time.monotonic() < deadline:
        replayed += runner.run_once(timeout_s=0.2)
    assert replayed >= on_the_bus(bus_case, topic)
    assert count_effects(consumer_db) == (N, N)


def test_a_poison_message_is_parked_then_replayed_after_the_fix(
    bus_case: BusCase, event: type[Event]
) -> None:
    topic = bus_case.topic("test.parcel")
    producer_db = bus_case.service_db(SERVICE)
    with UnitOfWork(producer_db) as uow:
        for i in range(10):
            uow.emit(event(parcel_id="parcel-bad" if i == 4 else f"parcel-{i}", weight_g=1000 + i))
    Relay(producer_db, bus_case.bus, SERVICE).relay_once()

    attempts: list[str] = []
    fixed = False

    def handler(env: Envelope, uow) -> None:  # noqa: ANN001
        if env.subject == "parcel-bad" and not fixed:
            attempts.append(env.id)
            record_effect(env, uow)  # written, then rolled back with the failed attempt
            raise ValueError("weight_g exceeds the scale's range")
        record_effect(env, uow)

    consumer_db = bus_case.service_db("billing")
    runner = runner_for(bus_case, consumer_db, topic, event.type, handler=handler, max_attempts=3)
    consume_everything(bus_case, runner, topic)
    assert count_effects(consumer_db) == (9, 9)  # the group moved on past the poison message
    assert len(attempts) == 3  # max_attempts tries (the first inside the batch that rolled back), then parked
    assert runner.dead_lettered == 1

    [parked] = list_dead_letters(bus_case.bus, runner.spec.group)
    assert parked.key == "parcel-bad"
    assert parked.headers["dlq.original_topic"] == topic
    assert parked.headers["dlq.attempts"] == "3"
    assert "weight_g exceeds the scale's range" in parked.headers["dlq.error"]
    assert Envelope.from_bytes(parked.value).id == attempts[0]

    fixed = True  # the handler is fixed and deployed; the operator replays the parked message
    assert replay_dead_letters(bus_case.bus, runner.spec.group) == 1
    consume_everything(bus_case, runner, topic, expected=1)
    assert count_effects(consumer_db) == (10, 10)
    assert runner.dead_lettered == 1


def test_failed_batch_is_rewound_not_skipped(tmp_path):
    """If handling a batch blows up after the poll (e.g. the dead-letter publish fails), the records are polled
    again instead of being skipped by the next commit."""
    from services.kernel.bus.dblog import DbLogBus
    from services.kernel.bus.port import Record, TopicSpec
    from services.kernel.consumer import ConsumerRunner, ConsumerSpec
    from services.kernel.db import Database
    from services.kernel.events import Envelope
    from services.kernel.outbox import kernel_metadata

    bus = DbLogBus(f"sqlite:///{tmp_path}/log.db")
    bus.ensure_topics([TopicSpec("t.rewind", 1)])
    db = Database(f"sqlite:///{tmp_path}/svc.db")
    kernel_metadata.create_all(db.engine)
    env = Envelope(source="/t", type="cn.recycle.test.rewind.v1", subject="k", data={})
    bus.publish([Record("t.rewind", "k", env.to_bytes())])
    seen: list[str] = []
    runner = ConsumerRunner(
        ConsumerSpec("g.rewind", ["t.rewind"], {env.type: lambda e, u: seen.append(e.id)}),
        db,
        bus,
        max_attempts=1,
    )
    original = runner._process_batch
    runner._process_batch = lambda recs: (_ for _ in ()).throw(RuntimeError("dead-letter publish failed"))
    with pytest.raises(RuntimeError):
        runner.run_once(timeout_s=0.0)
    runner._process_batch = original
    assert runner.run_once(timeout_s=0.0) == 1 and seen == [env.id]


def test_relayed_records_name_their_type_and_other_groups_skip_them_undecoded(
    bus_case: BusCase, event: type[Event]
) -> None:
    """The relay sets ce_id and ce_type; a group without a handler for the type skips the record without decoding
    it (an undecodable value with such a header is neither handled nor dead-lettered), one with a handler acts."""
    topic = bus_case.topic("test.parcel")
    producer_db = bus_case.service_db(SERVICE)
    with UnitOfWork(producer_db) as uow:
        uow.emit(event(parcel_id="p-1", weight_g=1))
    assert Relay(producer_db, bus_case.bus, SERVICE).relay_once() == 1
    (sent,) = [r for p in range(bus_case.bus.partitions(topic)) for r in bus_case.bus.read(topic, p, 0)]
    env = Envelope.from_bytes(sent.value)
    assert sent.headers["ce_type"] == event.type and sent.headers["ce_id"] == env.id
    bus_case.bus.publish([Record(topic, "p-2", b"not an envelope", {"ce_type": "cn.recycle.test.other.v1"})])

    other_db = bus_case.service_db("other")
    other = ConsumerRunner(
        ConsumerSpec(bus_case.group("other"), [topic], {"cn.recycle.test.other.v2": record_effect}),
        other_db,
        bus_case.bus,
        max_attempts=1,
    )
    bus_case._subs.append(other.subscription)
    consume_everything(bus_case, other, topic)
    assert count_effects(other_db) == (0, 0) and other.dead_lettered == 0

    billing_db = bus_case.service_db("billing")
    consume_everything(bus_case, runner_for(bus_case, billing_db, topic, event.type), topic)
    assert count_effects(billing_db) == (1, 1)
