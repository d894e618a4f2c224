"""Which events stats counts, and where the rebuild replays them from.

Groups (each its own offsets):
- `stats.pickups`  booking.pickup: PickupSettled → 回收量 by region, category and firm, CO2e avoided;
- `stats.trades`   trading.trade: TradeAwarded (kept), TradeSettled → the onward flow (traded_t).
"""

from __future__ import annotations

from services.contracts.booking import PickupSettled
from services.contracts.trading import TradeAwarded, TradeSettled
from services.kernel.consumer import ConsumerSpec, group
from services.kernel.runtime import ServiceRuntime

from .recording import FlowRecorder
from .settings import factors_of, low_value_of, settings_of


def recorder_of(rt: ServiceRuntime) -> FlowRecorder:
    return FlowRecorder(settings_of(rt), factors_of(rt), low_value_of(rt))


def consumers(rt: ServiceRuntime) -> list[ConsumerSpec]:
    rec = recorder_of(rt)
    return [
        group("stats.pickups", {PickupSettled: rec.when_pickup_settled_count_flow}),
        group(
            "stats.trades",
            {
                TradeAwarded: rec.when_trade_awarded_keep_trade,
                TradeSettled: rec.when_trade_settled_count_onward_flow,
            },
        ),
    ]
