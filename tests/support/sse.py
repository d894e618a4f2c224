"""Reading a text/event-stream reply in tests (the live feeds)."""

from __future__ import annotations

import asyncio
import json

from aiohttp import ClientResponse


async def next_event(resp: ClientResponse, timeout: float = 5.0) -> tuple[str, dict]:
    """The next `event:`/`data:` frame (comments and pings skipped)."""

    async def read() -> tuple[str, dict]:
        name, data = None, None
        while True:
            line = (await resp.content.readline()).decode()
            if line.startswith("event: "):
                name = line[7:].strip()
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "\n" and name is not None:
                return name, data

    return await asyncio.wait_for(read(), timeout)
