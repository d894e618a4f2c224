"""Fix 12: `make test` fails, never skips, when PostgreSQL, Redis or the broker is missing, unless the developer
opts out (TEST_ALLOW_MISSING_SERVICES=1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
def test_needs_postgres(pg_url):
    assert pg_url

def test_needs_redis(redis_url):
    assert redis_url
"""


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    probe = ROOT / "tests" / "fault" / f"test_probe_{os.getpid()}.py"
    probe.write_text(PROBE)
    try:
        # nothing listens on port 9 (discard) of loopback: both servers are "missing"
        e = {k: v for k, v in os.environ.items() if k != "TEST_ALLOW_MISSING_SERVICES"}
        e.update(
            TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:9/test",
            TEST_REDIS_URL="redis://127.0.0.1:9/15",
            **env,
        )
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs", str(probe)],
            cwd=ROOT,
            env=e,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        probe.unlink()


def test_a_missing_postgres_or_redis_fails_the_run(tmp_path):
    out = _run(tmp_path)
    assert out.returncode != 0, out.stdout
    assert "2 failed" in out.stdout or "2 error" in out.stdout, out.stdout
    assert "PostgreSQL at postgresql+psycopg://postgres@127.0.0.1:9/test is not reachable" in out.stdout
    assert "Redis at redis://127.0.0.1:9/15 is not reachable" in out.stdout


def test_the_developer_may_opt_out_and_then_they_are_skipped(tmp_path):
    out = _run(tmp_path, TEST_ALLOW_MISSING_SERVICES="1")
    assert out.returncode == 0, out.stdout
    assert "2 skipped" in out.stdout, out.stdout
