from services.booking.domain.events import PickupSettled
from services.kernel.consumer import ConsumerSpec
from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .handlers import when_pickup_settled_record_transactions
from .reference import seed_reference_prices
from .settings import settings_of
from .store import metadata


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    # Price inputs, one handler per source. Cleared lot trades join here as one more handler (trading.lot).
    return [
        ConsumerSpec(
            "pricing.observations",
            ["booking.pickup"],
            {PickupSettled.type: when_pickup_settled_record_transactions},
        ),
    ]


def setup(rt: ServiceRuntime) -> None:
    settings_of(rt)


SERVICE = ServiceSpec(
    name="pricing",
    metadata=metadata,
    router=router,
    consumers=consumers,
    seed=seed_reference_prices,
    setup=setup,
)
