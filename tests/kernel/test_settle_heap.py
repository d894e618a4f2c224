"""A started app keeps what it loaded out of the garbage collector's full collections (`settle_heap`): one over a
started gateway's objects held the GIL for ~100 ms, a pause for every request in flight."""

from __future__ import annotations

import gc
import time

from aiohttp import web

from services.kernel.http import settle_heap


async def test_startup_objects_are_frozen_while_the_app_runs(aiohttp_client):
    app = web.Application()
    settle_heap(app)
    client = await aiohttp_client(app)
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions loaded so far
    t = time.thread_time()
    gc.collect()
    frozen_collect = time.thread_time() - t
    await client.close()
    assert gc.get_freeze_count() == 0  # given back when the app stops
    t = time.thread_time()
    gc.collect()
    assert frozen_collect < time.thread_time() - t  # what the freeze saves on every full collection
