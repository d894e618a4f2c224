"""The fault suite on the distributed run (`recycle run-dist`: the broker, one process per service on PostgreSQL,
the gateway forwarding to them): its environment, a client that rides out a service being killed under it, and
the accounting read from every service's schema.

A service process holds the service's HTTP handlers, its outbox relay and its consumer groups, so killing it also
breaks the requests it was answering: the gateway answers 502/504 (or the connection drops) and the client tries
again with the same Idempotency-Key. A step whose first try committed before the kill may then be refused as a
state conflict; the client reads the pickup to see whether the step took effect (a lost reply) before calling
it a failure.
"""

from __future__ import annotations

import http.client
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from services.kernel.outbox import wait_until
from tests.booking.support import booking_body
from tests.e2e.flow import http_get, http_post, log_tail, platform_process
from workers.supervisor import free_port

from .harness import Actors, Api

SECRETS = {"JWT_SECRET": "fault-test-" + "x" * 40, "PII_KEY": "dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0="}
ORDER = ["requested", "accepted", "arrived", "weighed", "settled"]


def dist_env(tmp: Path, pg_url: str, redis_url: str, prefix: str, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        DATA_DIR=str(tmp),
        DATABASE_URL=pg_url,
        DB_SCHEMA_PREFIX=prefix,
        REDIS_URL=redis_url,
        GATEWAY_REDIS_PREFIX=f"recycle:{prefix}gw:",
        PORT=str(free_port()),
        ENV="dev",
        ADMIN_PHONES="13900000001",
        RATE_LIMIT_PER_MINUTE="100000",
        RATE_LIMIT_IP_PER_MINUTE="100000",
        BOOKING_SLOT_CAPACITY="100000",
        # a killed member's partitions go to the others (and back to its successor) within ~2 s
        KAFKA_SESSION_TIMEOUT_MS="2000",
        KAFKA_HEARTBEAT_INTERVAL_MS="250",
        # the harness kills far more often than a crash loop would: restart quickly, never give up
        SUPERVISOR_BACKOFF_S="0.2",
        SUPERVISOR_CRASH_LIMIT="100000",
        SUPERVISOR_CRASH_WINDOW_S="0.1",
        # a key whose process died between its commit and storing the reply is answered from what it made (a
        # booking: its pickup) once this window is over (60 s by default)
        IDEMPOTENCY_IN_PROGRESS_S="5",
        **SECRETS,
    )
    for name in (
        "KAFKA_BOOTSTRAP",
        "BUS",
        "SERVICES",
        "EVENT_LOG_URL",
        "CELERY_BROKER_URL",
        "CELERY_RESULT_BACKEND",
    ):
        env.pop(name, None)
    env.update(extra)
    return env


@contextmanager
def run_dist(env: dict[str, str], log: Path, timeout_s: float = 240) -> Iterator[tuple[object, dict]]:
    """`recycle run-dist` until it wrote its ready file; yields the supervisor's process and the addresses."""
    import json

    ready = log.parent / "ready.json"
    with platform_process(["run-dist", "--ready-file", str(ready)], env, log) as proc:
        if (
            not wait_until(lambda: ready.exists() or proc.poll() is not None, timeout_s, 0.2)
            or not ready.exists()
        ):
            raise AssertionError("run-dist did not become ready:\n" + log_tail(log))
        yield proc, json.loads(ready.read_text())


class RetryingApi(Api):
    """An Api whose calls ride out a restarting service: connection errors, 5xx and a key still in progress are
    tried again (same Idempotency-Key) until `patience_s` (past a service's "in progress" window for a key
    whose process died between its commit and storing the reply, plus restarts). Counts the tries that failed
    that way."""

    def __init__(self, base: str, patience_s: float = 300):
        super().__init__(base)
        self.patience_s = patience_s
        self.retried = 0
        self.lost_bookings = 0
        self.lost_actions = 0  # an accept, arrive, weigh or settle whose retry was told its reply was lost

    def attempt(
        self, method: str, path: str, token: str | None, body: dict | None, key: str
    ) -> tuple[int, dict] | None:
        """One try; None when it met the outage (try again)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            if method == "POST":
                got = http_post(self.base + path, body or {}, headers | {"Idempotency-Key": key})
            else:
                got = http_get(self.base + path, headers)
        except (OSError, ValueError, http.client.HTTPException):  # refused, reset, timed out, or cut short
            return None
        if got[0] >= 500 or (got[0] == 409 and got[1].get("reason") == "idempotency_key_in_progress"):
            return None
        return got

    def call(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict | None = None,
        status: int = 200,
        key: str | None = None,
    ) -> dict:
        done, reply = self.call_or_conflict(method, path, token, body, status, key)
        assert done, (method, path, reply)
        return reply

    def call_or_conflict(
        self,
        method: str,
        path: str,
        token: str | None = None,
        body: dict | None = None,
        status: int = 200,
        key: str | None = None,
    ) -> tuple[bool, dict]:
        """(True, reply) on `status`; (False, problem) for a 409 after a try that met the outage (it may have
        committed); anything else fails."""
        key = key or uuid.uuid4().hex
        deadline = time.monotonic() + self.patience_s
        met_outage = False
        while True:
            got = self.attempt(method, path, token, body, key)
            if got is not None:
                if got[0] == status:
                    return True, got[1]
                if got[0] == 409 and met_outage:
                    return False, got[1]
                self.errors.append((path, got[0], got[1]))
                raise AssertionError((method, path, got))
            met_outage = True
            self.retried += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"{method} {path}: no answer within {self.patience_s:.0f}s")
            time.sleep(0.2)


def settle_one_retrying(api: RetryingApi, actors: Actors, pid: str | None = None) -> str:
    """As harness.settle_one, each step tried until it is answered; a step refused as a conflict after a lost
    reply counts as done if the pickup shows it (a reply lost for good, which the service now rebuilds, is
    counted: `lost_actions`)."""
    while pid is None:
        done, reply = api.call_or_conflict("POST", "/v1/pickups", actors.resident, booking_body(), status=201)
        if done:
            pid = reply["id"]
        else:  # booked, but its reply was lost for good (idempotency_key_reply_lost): the client books again
            api.lost_bookings += 1
    weigh = {
        "lines": [{"category": "paper.cardboard", "qty": "13.2"}, {"category": "metal.copper", "qty": "1.25"}]
    }
    for path, token, body, target in (
        (f"/v1/jobs/{pid}/accept", actors.collector, None, "accepted"),
        (f"/v1/pickups/{pid}/arrive", actors.collector, None, "arrived"),
        (f"/v1/pickups/{pid}/weigh", actors.collector, weigh, "weighed"),
        (f"/v1/pickups/{pid}/settle", actors.resident, None, "settled"),
    ):
        done, reply = api.call_or_conflict("POST", path, token, body)
        if not done:
            api.lost_actions += reply.get("reason") == "idempotency_key_reply_lost"
            status = api.call("GET", f"/v1/pickups/{pid}", actors.resident)["status"]
            assert status in ORDER and ORDER.index(status) >= ORDER.index(target), (path, reply, status)
    return pid


def service_processes(supervisor_pid: int) -> list[tuple[int, str]]:
    """(pid, service) of run-dist's service processes (each: HTTP handlers, outbox relay, consumer groups)."""
    from .harness import children

    out = []
    for pid, args in children(supervisor_pid):
        words = args.split()
        if "serve-service" in words:
            out.append((pid, words[words.index("serve-service") + 1]))
    return out


def settled_without_one_invoice(url: str, prefix: str) -> dict[str, int]:
    """Pickups booking holds as settled whose invoice count is not exactly one (lost replies included: a booking
    the client never heard of is still a booking)."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            rows = c.execute(
                text(
                    f'SELECT p.id, count(i.pickup_id) FROM "{prefix}booking".pickups p '
                    f"LEFT JOIN \"{prefix}invoicing\".invoices i ON i.pickup_id = p.id AND i.kind = 'blue' "
                    "WHERE p.status = 'settled' GROUP BY p.id"
                )
            ).all()
            return {pid: n for pid, n in rows if n != 1}
    finally:
        eng.dispose()


def bookings(url: str, prefix: str) -> dict[str, int]:
    """Pickups per status in booking's schema."""
    from sqlalchemy import create_engine, text

    eng = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with eng.connect() as c:
            return dict(
                c.execute(text(f'SELECT status, count(*) FROM "{prefix}booking".pickups GROUP BY 1')).all()
            )
    finally:
        eng.dispose()


def answers(url: str, timeout_s: float = 1.0) -> bool:
    """True when `url` answers 200 within `timeout_s`."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return r.status == 200
    except (OSError, ValueError, http.client.HTTPException):
        return False


def unique_prefix() -> str:
    return f"f{uuid.uuid4().hex[:6]}_"
