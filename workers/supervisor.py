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
class Child:
    name: str
    args: list[str]
    env: dict[str, str]
    process: subprocess.Popen
    restartable: bool = True
    crashes: list[float] = field(default_factory=list)  # monotonic times of recent exits
    restart_at: float | None = None  # when a crashed child is due to start again

    @property
    def state(self) -> str:
        return (
            "restarting" if self.restart_at is not None else "up" if self.process.poll() is None else "down"
        )


@dataclass
class Supervisor:
    """Starts the platform's processes and keeps them running.

    A child that exits is started again after a back-off (`backoff_s`, doubling up to `max_backoff_s`); one that
    exits `crash_limit` times within `crash_window_s` is a crash loop: the platform stops with a message naming
    it. Meanwhile the children's states are written to `state_file` (JSON), which the gateway's `/readyz` reports.
    """

    procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    state_file: str | None = None
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    crash_limit: int = 5
    crash_window_s: float = 60.0
    poll_s: float = 0.2

    def spawn(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
        p = subprocess.Popen(args, env=env)
        self.procs.append((name, p))
        self.children[name] = Child(name, args, env, p)
        self._write_state()
        return p

    def adopt(self, name: str, process: subprocess.Popen) -> None:
        """Watch a process started elsewhere (the broker): its exit stops the platform."""
        self.procs.append((name, process))
        self.children[name] = Child(name, [], {}, process, restartable=False)

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
        for c in self.children.values():
            c.restart_at = None
        self._write_state()

    def check(self, now: float | None = None) -> int | None:
        """One supervision step: restart what is due, schedule restarts of what exited. Returns an exit code
        when the platform must stop (a crash loop, or a child that cannot be restarted)."""
        now = time.monotonic() if now is None else now
        changed = False
        for c in self.children.values():
            if c.restart_at is not None:
                if now >= c.restart_at:
                    c.restart_at = None
                    c.process = subprocess.Popen(c.args, env=c.env)
                    self.procs = [(n, c.process if n == c.name else p) for n, p in self.procs]
                    print(
                        f"supervisor: {c.name} started again (pid {c.process.pid})",
                        file=sys.stderr,
                        flush=True,
                    )
                    changed = True
                continue
            code = c.process.poll()
            if code is None:
                continue
            changed = True
            if not c.restartable:
                print(
                    f"supervisor: {c.name} exited with {code}; stopping the platform",
                    file=sys.stderr,
                    flush=True,
                )
                return code or 1
            c.crashes = [t for t in c.crashes if now - t < self.crash_window_s] + [now]
            if len(c.crashes) >= self.crash_limit:
                print(
                    f"supervisor: {c.name} exited {len(c.crashes)} times within {self.crash_window_s:.0f}s "
                    f"(last exit code {code}): a crash loop, stopping the platform. See its log above.",
                    file=sys.stderr,
                    flush=True,
                )
                self._write_state()
                return code or 1
            delay = min(self.backoff_s * 2 ** (len(c.crashes) - 1), self.max_backoff_s)
            c.restart_at = now + delay
            print(
                f"supervisor: {c.name} exited with {code}; starting it again in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
        if changed:
            self._write_state()
        return None

    def wait(self) -> int:
        """Supervise until a crash loop (then stop everything) or we are interrupted."""
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            while True:
                code = self.check()
                if code is not None:
                    return code
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            return 0
        finally:
            self.stop()

    def _write_state(self) -> None:
        if not self.state_file:
            return
        state = {
            c.name: {"state": c.state, "pid": c.process.pid, "restarts_recent": len(c.crashes)}
            for c in self.children.values()
        }
        tmp = f"{self.state_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(state, f)
        os.replace(tmp, self.state_file)


def read_process_states(path: str) -> dict[str, str]:
    """The supervisor's view of its children (name -> up | restarting | down); {} when there is none."""
    try:
        with open(path) as f:
            return {name: v["state"] for name, v in json.load(f).items()}
    except (OSError, ValueError):
        return {}


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


def state_file(settings: Settings) -> str:
    return str(settings.data_dir / "processes.json")


def make_supervisor(settings: Settings) -> Supervisor:
    """The platform's supervisor; SUPERVISOR_BACKOFF_S, SUPERVISOR_CRASH_LIMIT and SUPERVISOR_CRASH_WINDOW_S
    tune its restarts (the fault tests kill children far more often than any crash loop would)."""
    e = os.environ
    return Supervisor(
        state_file=state_file(settings),
        backoff_s=float(e.get("SUPERVISOR_BACKOFF_S", "1")),
        crash_limit=int(e.get("SUPERVISOR_CRASH_LIMIT", "5")),
        crash_window_s=float(e.get("SUPERVISOR_CRASH_WINDOW_S", "60")),
    )


def run_embedded(settings: Settings) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sup = make_supervisor(settings)
    env = dict(os.environ, SUPERVISOR_STATE_FILE=state_file(settings))
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    sup = make_supervisor(settings)
    env = dict(
        os.environ,
        BUS="kafka",
        EVENT_LOG_URL=settings.database_url,
        SUPERVISOR_STATE_FILE=state_file(settings),
    )
    # a dozen processes against a stock PostgreSQL (max_connections 100): each keeps 3 open and may open 4 more
    env.setdefault("DB_POOL_SIZE", "3")
    env.setdefault("DB_MAX_OVERFLOW", "4")
    if settings.redis_url:
        env.setdefault("CELERY_BROKER_URL", settings.redis_url)
        env.setdefault("CELERY_RESULT_BACKEND", settings.redis_url)
    try:
        if not os.environ.get("KAFKA_BOOTSTRAP"):
            from .broker import start_broker

            broker = start_broker()
            sup.adopt("kafka-broker", broker.process)
            env["KAFKA_BOOTSTRAP"] = broker.bootstrap
            # one broker: one copy of each partition (production's 3 / 2 come from topics.toml)
            env.setdefault("KAFKA_REPLICATION_FACTOR", "1")
            env.setdefault("KAFKA_MIN_INSYNC_REPLICAS", "1")
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
