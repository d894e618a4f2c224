"""Start the platform as processes and stop them together.

`recycle run`: the embedded run — the gateway with every service's request handling in one process, the services'
outbox relays and event consumers in a second (`recycle background`: requests and events each get a core), and
a Celery worker with beat on the embedded (SQLite) broker. `recycle run-dist`: the distributed topology on one host — the Kafka-protocol
broker (unless KAFKA_BOOTSTRAP points at one), each service in its own process on PostgreSQL, the gateway
forwarding to them, and a Celery worker on Redis.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field

from services.kernel.runtime import available_services
from services.kernel.settings import ConfigError, Settings


@dataclass
class Supervisor:
    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        p = subprocess.Popen(args, env=env)
        self.procs.append((name, p))
        return p

    def stop(self) -> None:
        for _, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    def wait(self) -> int:
        """Block until one process exits (then stop the rest) or we are interrupted."""
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while True:
                for name, p in self.procs:
                    if p.poll() is not None:
                        print(f"{name} exited with {p.returncode}; stopping the platform", file=sys.stderr)
                        return p.returncode or 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()


def wait_http(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    raise ConfigError(f"{url} did not become ready within {timeout_s:.0f}s; see the log above")


def _bin(name: str) -> str:
    return os.path.join(os.path.dirname(sys.executable), name)


def celery_args(settings: Settings, beat: bool = True) -> list[str]:
    args = [
        _bin("celery"),
        "-A",
        "workers.celery_app:celery_app",
        "worker",
        "--loglevel=INFO",
        "--concurrency=2",
        "--pool=threads",
    ]
    return args + (["-B", "-s", str(settings.data_dir / "celerybeat-schedule")] if beat else [])


def run_embedded(settings: Settings) -> int:
    sup = Supervisor()
    env = dict(os.environ)
    sup.spawn("gateway", [_bin("recycle"), "serve", "--no-background"], env)
    base = f"http://{settings.host}:{settings.port}"
    try:
        wait_http(base + "/healthz")  # the gateway has migrated and seeded: the other processes may start
    except ConfigError as exc:
        sup.stop()
        raise SystemExit(str(exc)) from None
    sup.spawn("background", [_bin("recycle"), "background"], env)
    sup.spawn("celery", celery_args(settings), env)
    print(f"\n  Platform ready: {base}   API docs: {base}/docs   (Ctrl-C stops everything)\n", flush=True)
    return sup.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_distributed(settings: Settings, ready_file: str | None = None) -> int:
    """Each service in its own process. Needs DATABASE_URL (PostgreSQL) and REDIS_URL; starts the broker."""
    if not settings.database_url.startswith("postgresql"):
        raise SystemExit("run-dist needs DATABASE_URL=postgresql://... (one schema per service is created)")
    sup = Supervisor()
    env = dict(os.environ, BUS="kafka", EVENT_LOG_URL=settings.database_url)
    if settings.redis_url:
        env.setdefault("CELERY_BROKER_URL", settings.redis_url)
        env.setdefault("CELERY_RESULT_BACKEND", settings.redis_url)
    try:
        if not os.environ.get("KAFKA_BOOTSTRAP"):
            from .broker import start_broker

            broker = start_broker()
            sup.procs.append(("kafka-broker", broker.process))
            env["KAFKA_BOOTSTRAP"] = broker.bootstrap
        names = available_services()
        urls = {}
        base_port = int(os.environ.get("SERVICE_BASE_PORT", "0"))
        for i, name in enumerate(names):
            # fixed ports when SERVICE_BASE_PORT is given (compose-like); free loopback ports otherwise
            port = base_port + i if base_port else free_port()
            urls[name] = f"http://127.0.0.1:{port}"
            sup.spawn(
                name, [_bin("recycle"), "serve-service", name, "--port", str(port)], dict(env, SERVICES=name)
            )
        for url in urls.values():
            wait_http(url + "/healthz", 120)
        sup.spawn(
            "gateway", [_bin("recycle"), "serve"], dict(env, SERVICES="none", SERVICE_URLS=json.dumps(urls))
        )
        base = f"http://{settings.host}:{settings.port}"
        wait_http(base + "/healthz")
        if settings.redis_url:
            sup.spawn("celery", celery_args(settings), env)
    except BaseException:
        sup.stop()
        raise
    print(f"\n  Distributed platform ready: {base}  (services: {', '.join(urls)})\n", flush=True)
    if ready_file:
        with open(ready_file, "w") as f:
            json.dump({"gateway": base, "services": urls, "kafka": env["KAFKA_BOOTSTRAP"]}, f)
    return sup.wait()
