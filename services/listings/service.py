"""The listings service (二手): listings, the search index, orders with escrow, reviews and reputation."""

from __future__ import annotations

from services.kernel.runtime import ServiceRuntime, ServiceSpec

from .api import router
from .consumers import consumers
from .domain.catalogue import categories
from .search import search_of
from .settings import settings_of
from .store import metadata


def setup(rt: ServiceRuntime) -> None:
    """Read the settings and the categories file (a bad file stops start-up) and open the search index."""
    s = settings_of(rt)
    categories(s.categories_file or None)
    search_of(rt)


SERVICE = ServiceSpec(name="listings", metadata=metadata, router=router, consumers=consumers, setup=setup)
