"""Fixtures of the security suite: both runs of the platform, shared by the whole package (see harness.py)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.security.harness import MODES, Api, Topology, settings_for


@pytest.fixture(scope="package", params=MODES)
def topology(request, tmp_path_factory):  # noqa: ANN001, ANN201
    mode = request.param
    redis_url = request.getfixturevalue("redis_url") if mode == "distributed" else None
    with Topology(mode, settings_for(mode, tmp_path_factory.mktemp(mode), redis_url)) as topo:
        yield topo


@pytest.fixture
async def api(topology):  # noqa: ANN001, ANN201
    async with aiohttp.ClientSession() as session:
        yield Api(topology, session)
