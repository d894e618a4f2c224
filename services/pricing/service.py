from services.kernel.runtime import ServiceSpec

from .api import router
from .reference import seed_reference_prices
from .store import metadata

SERVICE = ServiceSpec(name="pricing", metadata=metadata, router=router, seed=seed_reference_prices)
