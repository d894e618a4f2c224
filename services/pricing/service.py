from services.booking.domain.events import PickupSettled
from services.contracts.trading import TradeSettled
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .handlers import when_pickup_settled_record_transactions, when_trade_settled_record_transaction
from .reference import seed_reference_prices
from .settings import settings_of
from .store import metadata


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    # Price inputs, one handler per source.
    return [
        ConsumerSpec(
            "pricing.observations",
            ["booking.pickup"],
            {PickupSettled.type: when_pickup_settled_record_transactions},
        ),
        group("pricing.trades", {TradeSettled: when_trade_settled_record_transaction}),
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
