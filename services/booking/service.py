from services.kernel.consumer import ConsumerSpec
from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .prices import when_index_published_update_price_copy
from .seed import seed
from .store import metadata


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    return [
        ConsumerSpec("booking.prices", ["pricing.index"],
                     {"cn.recycle.pricing.index.published.v1": when_index_published_update_price_copy}),
    ]


SERVICE = ServiceSpec(name="booking", metadata=metadata, router=router, consumers=consumers, seed=seed)
