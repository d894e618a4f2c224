"""Fix 3: parked counts are on /metrics and the admin endpoint shows, per group, what was parked and replayed."""

from __future__ import annotations

from services.kernel.bus.port import Record
from services.kernel.consumer import dlq_topic
from tests.gateway.support import login, start


async def test_parked_records_are_counted_on_metrics_and_the_admin_endpoint(aiohttp_client, sqlite_settings):  # noqa: ANN001
    settings = sqlite_settings.model_copy(update={"admin_phones": "13900000001", "metrics_token": "scrape"})
    scraper = {"Authorization": "Bearer scrape"}
    platform, client = await start(aiohttp_client, settings, services=["accounts", "payments"])
    [group, *_] = platform["payments"].consumer_groups()
    platform.bus.publish(
        [
            Record(
                topic=dlq_topic(group),
                key=f"k{i}",
                value=b"{}",
                headers={
                    "dlq.original_topic": "payments.payout",
                    "dlq.original_partition": "0",
                    "dlq.original_offset": str(i),
                    "dlq.error": "ValueError: boom",
                    "dlq.attempts": "5",
                },
            )
            for i in range(3)
        ]
    )
    admin = await login(client, platform, "13900000001")

    metrics = await (await client.get("/metrics", headers=scraper)).text()
    assert f'recycle_dead_letters_parked{{group="{group}"}} 3.0' in metrics
    assert f'recycle_dead_letters_replayed{{group="{group}"}} 0.0' in metrics
    assert 'recycle_outbox_parked{service="payments"} 0.0' in metrics

    r = await client.post(f"/v1/admin/dead-letters/{group}/replay", json={}, headers=admin.auth)
    assert r.status == 200 and (await r.json())["replayed"] == 3
    items = {
        i["group"]: i
        for i in (await (await client.get("/v1/admin/dead-letters", headers=admin.auth)).json())["items"]
    }
    assert items[group] == {"group": group, "parked": 3, "replayed": 3}
    assert (
        f'recycle_dead_letters_replayed{{group="{group}"}} 3.0'
        in await (await client.get("/metrics", headers=scraper)).text()
    )
