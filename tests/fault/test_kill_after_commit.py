"""A process SIGKILLed between a keyed request's commit and storing its reply (docs/reliability.md, "Idempotency
after a commit"): `recycle serve` on the embedded run books a pickup, commits it with its Idempotency-Key and dies
before the reply is stored or sent (IDEMPOTENCY_FAULT=kill_after_commit). Started again, the client's retry with
the same key gets the pickup — 201, the id the key recorded — once its in-progress window is over
(IDEMPOTENCY_IN_PROGRESS_S, tuned short here); the database holds one pickup.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

from services.kernel.outbox import wait_until
from tests.booking.support import booking_body
from tests.e2e.flow import NOT_EMBEDDED, FlowClient, http_get, http_post, log_tail, platform_process
from tests.fault.dist import SECRETS
from workers.supervisor import free_port


def _env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = dict(
        os.environ,
        DATA_DIR=str(data_dir),
        PORT=str(port),
        ENV="dev",
        ADMIN_PHONES="13900000001",
        # the window a committed key without its reply counts as in progress; the gateway's own claim likewise
        IDEMPOTENCY_IN_PROGRESS_S="1",
        IDEMPOTENCY_LOCK_S="1",
        **SECRETS,
        **extra,
    )
    for name in (*NOT_EMBEDDED, "IDEMPOTENCY_FAULT"):
        env.pop(name, None)
    env.update(extra)
    return env


def _up(base: str, proc, log: Path) -> None:  # noqa: ANN001 - a Popen
    def answers() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return http_get(base + "/healthz")[0] == 200
        except OSError:
            return False

    assert wait_until(answers, 120, 0.2) and proc.poll() is None, log_tail(log)


def _rows(data_dir: Path, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(f"file:{data_dir / 'booking.db'}?mode=ro", uri=True) as c:
        return c.execute(sql, args).fetchall()


def test_a_booking_whose_process_died_before_storing_its_reply_is_answered_on_retry(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    key, body = uuid.uuid4().hex, booking_body()

    first_log = tmp_path / "first.log"
    with platform_process(
        ["serve"], _env(tmp_path, port, IDEMPOTENCY_FAULT="kill_after_commit"), first_log
    ) as proc:
        _up(base, proc, first_log)
        resident = FlowClient(base, "kill").login("13700002222")
        auth = {"Authorization": f"Bearer {resident['access_token']}", "Idempotency-Key": key}
        try:
            got = http_post(base + "/v1/pickups", body, auth)
        except OSError:  # the connection dropped with the process
            got = None
        assert got is None, got
        assert proc.wait(30) == -signal.SIGKILL, log_tail(first_log)

    # the work and its key committed; no reply was stored
    [(pid,)] = _rows(tmp_path, "SELECT id FROM pickups WHERE resident_id = ?", resident["user_id"])
    [(state, made)] = _rows(tmp_path, "SELECT state, made FROM idempotency_keys WHERE key = ?", key)
    assert (state, made) == ("committed", pid)

    again_log = tmp_path / "again.log"
    with platform_process(["serve"], _env(tmp_path, port), again_log) as proc:
        _up(base, proc, again_log)
        deadline = time.monotonic() + 30
        while True:  # as a client does: 409 in progress (Retry-After) until the window is over
            status, reply = http_post(base + "/v1/pickups", body, auth)
            if status != 409 or reply.get("reason") != "idempotency_key_in_progress":
                break
            assert time.monotonic() < deadline, reply
            time.sleep(0.2)
        assert status == 201, (status, reply, log_tail(again_log))
        assert reply["id"] == pid and reply["status"] == "requested", reply
        assert http_post(base + "/v1/pickups", body, auth) == (201, reply)  # kept now
        status, mine = http_get(base + "/v1/pickups?mine=1", {"Authorization": auth["Authorization"]})
        assert status == 200 and [p["id"] for p in mine["items"]] == [pid], mine

    assert _rows(tmp_path, "SELECT count(*) FROM pickups") == [(1,)]
    assert _rows(tmp_path, "SELECT state FROM idempotency_keys WHERE key = ?", key) == [("replied",)]
