"""Gateway test fixtures. Redis comes from tests/conftest.py (`redis_url`); each test gets its own key prefix."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def redis_prefix(redis_url):  # noqa: ANN001, ANN201
    """A key prefix of its own, deleted afterwards: tests never see each other's keys."""
    import redis

    prefix = f"test:{uuid.uuid4().hex[:10]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=prefix + "*"))
    if keys:
        client.delete(*keys)
    client.close()
