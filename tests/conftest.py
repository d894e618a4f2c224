"""Shared test fixtures.

PostgreSQL: `TEST_POSTGRES_URL` (default: the machine's server, database `test`). Each test session works in a
fresh database it creates and drops, so runs never see each other's rows. A missing PostgreSQL, Redis or broker
fails the tests that need it (opt out with TEST_ALLOW_MISSING_SERVICES=1: see tests/support/services.py).
"""

from __future__ import annotations

import os
import urllib.parse
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import create_engine, text

from services.kernel.settings import Settings
from tests.support.redis_lease import leased_redis_db
from tests.support.services import missing

# Many tests (and the platforms the e2e tests start as processes) log in many users from one address: the SMS
# pumping budgets (README, "Configuration") are raised for them. Tests of the budgets set their own.
os.environ.setdefault("OTP_PER_CLIENT_LIMIT", "1000000")
os.environ.setdefault("OTP_GLOBAL_LIMIT", "1000000")
# A distributed test platform is a dozen services in one process, each with its pool: kept at 10 idle connections
# each, one platform held ~90 of PostgreSQL's 100, and two test workers ran out ("too many clients already").
os.environ.setdefault("DB_POOL_SIZE", "2")

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _pg_available() -> bool:
    try:
        eng = create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as c:
            c.execute(text("select 1"))
        eng.dispose()
        return True
    except Exception:  # noqa: BLE001 - unreachable for any reason
        return False


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of a fresh PostgreSQL database for this test session."""
    if not _pg_available():
        missing(f"PostgreSQL at {PG_ADMIN_URL}", "start it or set TEST_POSTGRES_URL")
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


# unset: the session leases a Redis database of its own on this server (tests/support/redis_lease.py)
REDIS_TEST_URL = os.environ.get("TEST_REDIS_URL", "")
REDIS_SERVER = "redis://127.0.0.1:6379"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis database for this test session alone (flushed before the session). CI must reach it."""
    import redis

    parts = urllib.parse.urlsplit(REDIS_TEST_URL or REDIS_SERVER)
    server = f"{parts.scheme}://{parts.netloc}"
    explicit = int(parts.path.strip("/") or 0) if REDIS_TEST_URL else None
    try:
        redis.Redis.from_url(server, socket_connect_timeout=3).ping()
    except Exception:  # noqa: BLE001 - unreachable for any reason
        missing(f"Redis at {REDIS_TEST_URL or server}", "start it or set TEST_REDIS_URL")
    with leased_redis_db(server, explicit) as db:
        if db is None:
            missing(
                "a free Redis database (1-15)", "other test sessions hold them all; or set TEST_REDIS_URL"
            )
        url = f"{server}/{db}"
        redis.Redis.from_url(url).flushdb()
        yield url


def unique_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}_"


@pytest.fixture
def sqlite_settings(tmp_path) -> Settings:
    """Embedded settings in a temporary data directory."""
    return Settings(
        env="test",
        data_dir=tmp_path,
        bus="dblog",
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )


@pytest.fixture
def pg_settings(pg_url, tmp_path) -> Settings:
    """Distributed-database settings: every service in its own schema of the session's PostgreSQL database."""
    return Settings(
        env="test",
        data_dir=tmp_path,
        bus="dblog",
        database_url=pg_url,
        event_log_url=pg_url,
        db_schema_prefix=unique_prefix(),
        jwt_secret="test-secret-" + "x" * 32,
        pii_key="dGVzdC1waWkta2V5LTMyLWJ5dGVzLWxvbmctLS0tLS0=",
    )


@pytest.fixture(scope="session")
def localstripe(tmp_path_factory):  # noqa: ANN001, ANN201
    """localstripe (a stateful fake Stripe server, PyPI) on a free port, one per session."""
    from tests.payments.support import run_localstripe

    with run_localstripe(tmp_path_factory.mktemp("localstripe")) as ls:
        yield ls


# Under `make test` (pytest-xdist, two workers) the tests that start whole platforms as processes run one after another
# on one worker: two of them at once on a two-core machine would only make both slower and their time-outs tighter.
_PROCESS_SUITES = ("tests/fault/", "tests/e2e/")


def pytest_collection_modifyitems(config, items) -> None:  # noqa: ANN001
    for item in items:
        label = getattr(item, "operation_label", None)
        if label and not item.nodeid.endswith("]"):
            # schemathesis's tests of each operation all get one node id under pytest 9 (it builds ids from the
            # function's name and its parameters; schemathesis passes neither): pytest-xdist, which schedules by
            # node id, would run one of them only. Give each its operation, as pytest 8 did.
            item._id = item._id.with_params(label)
        if item.nodeid.startswith(_PROCESS_SUITES):
            item.add_marker(pytest.mark.xdist_group("processes"))


@pytest.fixture
def show_figures(request, capsys) -> Callable[[str], None]:  # noqa: ANN001
    """Report a measured figure (counts, timings): printed at once when run alone, and in the run's summary
    ("measured figures"), which also works under pytest-xdist, where a worker's output is not shown."""

    def show(line: str) -> None:
        request.node.user_properties.append(("figures", line))
        if not hasattr(request.config, "workerinput"):
            with capsys.disabled():
                print(line)

    return show


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    lines = [
        (rep.nodeid, value)
        for key in ("passed", "failed")
        for rep in terminalreporter.stats.get(key, [])
        if rep.when == "call"
        for name, value in getattr(rep, "user_properties", [])
        if name == "figures"
    ]
    if lines:
        terminalreporter.section("measured figures")
        for nodeid, value in lines:
            terminalreporter.write_line(f"{nodeid}: {value.strip()}")
