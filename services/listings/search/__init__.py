"""Search: the port, its adapters (chosen by `SEARCH=sqlite|elasticsearch`), the indexer."""

from __future__ import annotations

from typing import TYPE_CHECKING

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

    return SqliteSearchIndex(rt.settings.fmt(s.search_path))


def search_of(rt: ServiceRuntime) -> SearchIndex:
    index = rt.ports.get("search")
    if index is None:
        index = rt.ports["search"] = make_index(rt)
    return index
