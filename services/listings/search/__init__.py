"""Search: the port, its adapters (chosen by `SEARCH=sqlite|elasticsearch`), the indexer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.kernel.ports import Port
from services.kernel.settings import ConfigError

from .port import SearchIndex

if TYPE_CHECKING:
    from services.kernel.runtime import ServiceRuntime


def make_index(rt: ServiceRuntime) -> SearchIndex:
    from ..settings import settings_of

    s = settings_of(rt)
    if rt.settings.search == "elasticsearch":
        if not rt.settings.elasticsearch_url:
            raise ConfigError("SEARCH=elasticsearch needs ELASTICSEARCH_URL")
        from .elastic import ElasticSearchIndex

        return ElasticSearchIndex(rt.settings.elasticsearch_url, s.elasticsearch_index)
    from .sqlite_fts import SqliteSearchIndex

    return SqliteSearchIndex(
        rt.settings.fmt(s.search_path),
        rank_window=s.search_rank_window,
        cache_entries=s.search_cache_entries,
    )


SEARCH: Port[SearchIndex] = Port("listings.search")


def search_of(rt: ServiceRuntime) -> SearchIndex:
    """The runtime's search index (opened by the service's setup, or on first use)."""
    index = rt.ports.get(SEARCH)
    if index is None:
        index = rt.ports[SEARCH] = make_index(rt)
    return index
