"""Fixtures of the listings tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_elasticsearch import fake_elasticsearch


@pytest.fixture(scope="session")
def fake_elasticsearch_url() -> Iterator[str]:
    """The fake Elasticsearch node of this test session (each test uses indices of its own names)."""
    with fake_elasticsearch() as url:
        yield url
