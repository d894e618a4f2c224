"""The fault suite's harness: a running platform driven through its public API (bookings → settlements), a
killer that SIGKILLs chosen processes at random moments, process memory, and the final accounting read from
the services' own databases.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from services.kernel.outbox import wait_until
from tests.booking.support import HOME, booking_body
from tests.e2e.flow import http_get, http_post

ADMIN_PHONE = "13900000001"


class Api:
    """Plain HTTP against a running gateway; every POST with its own Idempotency-Key."""

    def __init__(self, base: str):
        self.base = base
        self.errors: list[tuple[str, int, dict]] = []

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict | None = None,
        status: int = 200,
        key: str | None = None,
    ) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if method == "POST":
            got = http_post(
                self.base + path, body or {}, headers | {"Idempotency-Key": key or uuid.uuid4().hex}
            )
        else:
            got = http_get(self.base + path, headers)
        if got[0] != status:
            self.errors.append((path, got[0], got[1]))
        assert got[0] == status, (method, path, got)
        return got[1]

    def login(self, phone: str) -> dict:
        code = self.call("POST", "/v1/auth/otp", body={"phone": phone}, status=202)["dev_code"]
        return self.call("POST", "/v1/auth/token", body={"phone": phone, "code": code})


@dataclass
class Actors:
    resident: str
    collector: str
    collector_id: str


def set_up_actors(api: Api) -> Actors:
    """A verified firm with a verified collector, and a resident who consented to reverse invoicing."""
    admin = api.login(ADMIN_PHONE)["access_token"]
    owner = api.login("13800138000")["access_token"]
    firm = api.call(
        "POST",
        "/v1/firms",
        owner,
        {
            "name": "绿色再生资源回收有限公司",
            "uscc": "91350100M000100Y43",
            "recycler_filing_no": "BA-2024-0001",
            "address": "北京市朝阳区某路1号",
            "city_code": "110105",
        },
        status=201,
    )
    api.call("POST", f"/v1/admin/verifications/firm/{firm['id']}/approve", admin)
    qual = api.call(
        "POST",
        f"/v1/firms/{firm['id']}/qualifications",
        owner,
        {"kind": "recycler_filing", "number": "BA-2024-0001", "valid_until": "2099-12-31"},
        status=201,
    )
    api.call("POST", f"/v1/admin/verifications/qualification/{qual['id']}/approve", admin)
    resident = api.login("13700001111")["access_token"]
    api.call("POST", "/v1/me/identity", resident, {"real_name": "张三", "id_number": "11010519491231002X"})
    api.call("POST", "/v1/me/consents", resident, {"kind": "reverse_invoicing"}, status=201)
    applicant = api.login("15011112222")["access_token"]
    col = api.call(
        "POST",
        "/v1/collectors",
        applicant,
        {
            "real_name": "王五",
            "id_number": "44030519900101123X",
            "firm_id": firm["id"],
            "area": {"lat": HOME[0], "lng": HOME[1], "radius_km": 8},
            "categories": ["paper.cardboard", "metal.copper"],
        },
        status=201,
    )
    api.call("POST", f"/v1/admin/verifications/collector/{col['id']}/approve", admin)
    collector = api.login("15011112222")["access_token"]
    return Actors(resident, collector, col["id"])


def wait_for_collector(api: Api, actors: Actors, timeout_s: float = 120) -> str:
    """Book once and wait until booking knows the collector (accounts → booking by event); returns the pickup."""
    pid = api.call("POST", "/v1/pickups", actors.resident, booking_body(), status=201)["id"]
    assert wait_until(
        lambda: any(
            j["id"] == pid
            for j in http_get(api.base + "/v1/jobs", {"Authorization": f"Bearer {actors.collector}"})[1].get(
                "items", []
            )
        ),
        timeout_s,
        0.3,
    ), "booking never learnt of the verified collector"
    return pid


def settle_one(api: Api, actors: Actors, pid: str | None = None) -> str:
    """Book (unless given), accept, arrive, weigh and settle one pickup; returns its id."""
    if pid is None:
        pid = api.call("POST", "/v1/pickups", actors.resident, booking_body(), status=201)["id"]
    api.call("POST", f"/v1/jobs/{pid}/accept", actors.collector)
    api.call("POST", f"/v1/pickups/{pid}/arrive", actors.collector)
    api.call(
        "POST",
        f"/v1/pickups/{pid}/weigh",
        actors.collector,
        {
            "lines": [
                {"category": "paper.cardboard", "qty": "13.2"},
                {"category": "metal.copper", "qty": "1.25"},
            ]
        },
    )
    api.call("POST", f"/v1/pickups/{pid}/settle", actors.resident)
    return pid


def settled_everywhere(api: Api, actors: Actors, pids: list[str], timeout_s: float) -> dict[str, dict]:
    """Wait until every pickup shows its invoice and its payout as final; returns the last views."""
    views: dict[str, dict] = {}

    def done() -> bool:
        for pid in pids:
            if pid in views and _final(views[pid]):
                continue
            views[pid] = api.call("GET", f"/v1/pickups/{pid}", actors.resident)
            if not _final(views[pid]):
                return False
        return True

    wait_until(done, timeout_s, 0.5)
    return views


def _final(view: dict) -> bool:
    return (view.get("invoice") or {}).get("status") in ("issued", "blocked") and (
        view.get("payout") or {}
    ).get("status") in ("paid", "credited", "failed")


@dataclass
class Killer:
    """SIGKILLs one of `targets()`'s pids at random moments of its life (a random time after it appeared, from
    mid-start-up to steady work) until `kills` were made or `stop` is set; at least a random `min_gap_s` to
    `max_gap_s` apart (0: as soon as one is due)."""

    targets: Callable[[], list[int]]
    kills: int
    min_life_s: float = 0.2
    max_life_s: float = 3.0
    min_gap_s: float = 0.0
    max_gap_s: float = 0.0
    seed: int = 11
    made: list[tuple[float, int]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        rng = random.Random(self.seed)
        seen: dict[int, float] = {}
        while len(self.made) < self.kills and not self.stop.is_set():
            killed = {pid for _, pid in self.made}
            pids = [pid for pid in self.targets() if pid not in killed]  # (a zombie may still be listed)
            now = time.monotonic()
            for pid in pids:
                seen.setdefault(pid, now + rng.uniform(self.min_life_s, self.max_life_s))
            due = [pid for pid in pids if seen[pid] <= now]
            if not due:
                self.stop.wait(0.05)
                continue
            victim = rng.choice(due)
            try:
                os.kill(victim, signal.SIGKILL)
                self.made.append((now, victim))
            except ProcessLookupError:
                continue
            if self.max_gap_s:
                self.stop.wait(rng.uniform(self.min_gap_s, self.max_gap_s))


def children(ppid: int) -> list[tuple[int, str]]:
    out = subprocess.run(
        ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(ppid)], capture_output=True, text=True
    )
    rows = []
    for line in out.stdout.splitlines():
        pid, _, args = line.strip().partition(" ")
        rows.append((int(pid), args))
    return rows


def rss_kib(pid: int) -> int:
    """Resident set size of a process and its descendants (a Celery worker forks nothing here; beat is a thread)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def drive(api: Api, actors: Actors, n: int, concurrency: int = 4) -> list[str]:
    """Settle `n` pickups through the API, `concurrency` at a time."""
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(lambda _: settle_one(api, actors), range(n)))


def sqlite_accounting(data_dir, pids: list[str]) -> dict[str, object]:  # noqa: ANN001 - a Path
    """Read the embedded run's SQLite files: invoices and payouts per pickup, unsent outbox rows per service."""
    import sqlite3

    def rows(db: str, sql: str) -> list[tuple]:
        with sqlite3.connect(f"file:{data_dir / db}?mode=ro", uri=True) as c:
            return c.execute(sql).fetchall()

    invoices = dict(
        rows("invoicing.db", "SELECT pickup_id, count(*) FROM invoices WHERE kind = 'blue' GROUP BY 1")
    )
    payouts = dict(rows("payments.db", "SELECT reference_id, count(*) FROM payouts GROUP BY 1"))
    outbox = {}
    for f in sorted(data_dir.glob("*.db")):
        names = {n for (n,) in rows(f.name, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "outbox" in names:
            outbox[f.stem] = rows(f.name, "SELECT count(*), count(sent_at) FROM outbox")[0]
    return {"invoices": invoices, "payouts": payouts, "outbox": outbox}


def check_accounting(acc: dict, pids: list[str]) -> dict[str, int]:
    """Every pickup exactly one invoice, at most one payout; every outbox row delivered. Returns the counts."""
    invoices, payouts, outbox = acc["invoices"], acc["payouts"], acc["outbox"]
    assert {p: invoices.get(p, 0) for p in pids} == {p: 1 for p in pids}, (
        "a pickup without exactly one invoice"
    )
    assert all(n <= 1 for n in payouts.values()), {k: n for k, n in payouts.items() if n > 1}
    unsent = {svc: total - sent for svc, (total, sent) in outbox.items() if total != sent}
    assert unsent == {}, f"outbox rows never delivered: {unsent}"
    return {
        "pickups": len(pids),
        "invoices": sum(invoices.get(p, 0) for p in pids),
        "payouts": sum(payouts.get(p, 0) for p in pids),
        "outbox_rows_delivered": sum(total for total, _ in outbox.values()),
    }


def sqlite_event_backlog(data_dir) -> int:  # noqa: ANN001 - a Path
    """Events not yet handled: unsent outbox rows of every service plus, for every consumer group, the records
    after its committed offsets (the embedded log)."""
    import sqlite3

    backlog = 0
    for f in sorted(data_dir.glob("*.db")):
        with sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=10) as c:
            names = {n for (n,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "outbox" in names:
                backlog += c.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()[0]
            if "bus_group_offsets" in names:
                backlog += c.execute(
                    "SELECT coalesce(sum(p.next_offset - g.committed), 0) FROM bus_group_offsets g "
                    "JOIN bus_partitions p ON p.topic = g.topic AND p.partition = g.partition "
                    "WHERE g.group_id NOT LIKE 'dlq.%'"
                ).fetchone()[0]
    return backlog


def sql_accounting(url: str, schema_prefix: str, pids: list[str]) -> dict[str, object]:
    """As sqlite_accounting, for services in PostgreSQL schemas `<prefix><service>`."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            invoices = dict(
                c.execute(
                    text(
                        f"SELECT pickup_id, count(*) FROM \"{schema_prefix}invoicing\".invoices WHERE kind = 'blue' GROUP BY 1"
                    )
                ).all()
            )
            payouts = dict(
                c.execute(
                    text(f'SELECT reference_id, count(*) FROM "{schema_prefix}payments".payouts GROUP BY 1')
                ).all()
            )
            outbox = {}
            for (schema,) in c.execute(
                text(
                    "SELECT table_schema FROM information_schema.tables WHERE table_name = 'outbox' "
                    "AND table_schema LIKE :p"
                ),
                {"p": schema_prefix + "%"},
            ):
                outbox[schema] = tuple(
                    c.execute(text(f'SELECT count(*), count(sent_at) FROM "{schema}".outbox')).one()
                )
    finally:
        eng.dispose()
    return {"invoices": invoices, "payouts": payouts, "outbox": outbox}


class Load:
    """Settles pickups through the API in a thread, `concurrency` at a time, until stopped (started at most `rate`
    a second, if given); calls that fail (the platform is in an outage) are counted, and only pickups whose settle
    was answered 200 are kept."""

    def __init__(self, api: Api, actors: Actors, concurrency: int = 3, rate: float | None = None):
        self.api, self.actors, self.concurrency = api, actors, concurrency
        self.pace = Pace(rate) if rate else None
        self.pids: list[str] = []
        self.failed_calls = 0
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                if self.pace is not None and not self.pace.wait(self.stop):
                    return
                self.pids.append(settle_one(self.api, self.actors))
            except (AssertionError, OSError):
                self.failed_calls += 1
                self.stop.wait(0.2)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)


class Pace:
    """Hands out start times `1 / rate` apart to any number of threads."""

    def __init__(self, rate: float):
        self.step, self.next, self.lock = 1.0 / rate, time.monotonic(), threading.Lock()

    def wait(self, stop: threading.Event) -> bool:
        with self.lock:
            at, self.next = self.next, max(self.next + self.step, time.monotonic())
        return not stop.wait(max(0.0, at - time.monotonic()))


def paced_load(
    api: Api,
    actors: Actors,
    rate: float,
    stop: threading.Event,
    pids: list[str],
    failures: list[BaseException],
    clients: int = 4,
    settle: Callable[..., str] = settle_one,
) -> list[threading.Thread]:
    """`clients` threads settling pickups, started `1 / rate` seconds apart, until `stop` (not started yet)."""
    pace = Pace(rate)

    def load() -> None:
        while not stop.is_set():
            try:
                if pace.wait(stop):
                    pids.append(settle(api, actors))
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                failures.append(exc)
                return

    return [threading.Thread(target=load, daemon=True) for _ in range(clients)]
