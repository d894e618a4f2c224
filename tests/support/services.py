"""What the tests do when a server they need (PostgreSQL, Redis, the Kafka-protocol broker) is missing.

They fail, naming the server and the setting: a skipped integration test looks like a passing one. A developer
without the servers opts out explicitly with `TEST_ALLOW_MISSING_SERVICES=1`, and then those tests are skipped.
"""

from __future__ import annotations

import os

import pytest

OPT_OUT = "TEST_ALLOW_MISSING_SERVICES"


def missing(what: str, how_to_fix: str) -> None:
    """Fail the test (or skip it when the developer opted out) because `what` is not reachable."""
    message = f"{what} is not reachable ({how_to_fix}); set {OPT_OUT}=1 to skip the tests that need it"
    if os.environ.get(OPT_OUT, "").lower() in ("1", "true", "yes"):
        pytest.skip(message)
    pytest.fail(message, pytrace=False)
