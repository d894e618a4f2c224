"""The search port: what the listings service asks of a search index, whatever runs it.

Adapters: `sqlite_fts.SqliteSearchIndex` (the embedded default: FTS5 over pre-tokenised CJK bigrams, single
characters and jieba words; BM25) and `elastic.ElasticSearchIndex` (Elasticsearch with the official client).
One contract suite (tests/listings/test_search_contract.py) runs against both.

Every write carries the listing's `version`: an index keeps the highest version it has seen of each listing,
removals included, so replayed or late events never resurrect or roll back a document.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

Sort = Literal["relevance", "price_asc", "price_desc", "newest"]
FACETS = ("category", "condition", "city_code")


@dataclass(frozen=True)
class ListingDoc:
    listing_id: str
    version: int
    seller_id: str
    title: str
    description: str
    category: str
    condition: str
    price_fen: int
    city_code: str
    published_at: datetime


@dataclass(frozen=True)
class SearchQuery:
    q: str = ""
    category: str | None = None  # a code (electronics.phone) or a family (electronics)
    # a division: a county, or a city or a province, which covers the counties inside it (region_prefix)
    city_code: str | None = None
    condition: str | None = None
    min_price_fen: int | None = None
    max_price_fen: int | None = None
    sort: Sort = "relevance"
    limit: int = 20
    offset: int = 0


def region_prefix(city_code: str) -> str:
    """What the codes inside a division (GB/T 2260) start with: a province `PP0000` covers `PP…`, a city `PPCC00`
    covers `PPCC…`, a county only itself. Listings carry the county where the item is (110105 朝阳区); a buyer
    looks in a city (110100 北京市) or a province."""
    if city_code.endswith("0000"):
        return city_code[:2]
    if city_code.endswith("00"):
        return city_code[:4]
    return city_code


@dataclass(frozen=True)
class SearchHit:
    listing_id: str
    title: str
    category: str
    condition: str
    city_code: str
    price_fen: int
    published_at: datetime
    score: float | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    total: int  # exact
    facets: dict[str, dict[str, int]] = field(default_factory=dict)  # exact, over every hit
    # relevance sort: how many of the hits BM25 scored when it was not all of them (the embedded index's rank
    # window: the newest ones, the rest following newest first); None when every hit was scored
    scored: int | None = None


class SearchIndex(Protocol):
    name: str

    def upsert(self, docs: list[ListingDoc]) -> int:
        """Add or replace documents (each only if its version is newer than what the index has); returns how many
        changed."""
        ...

    def remove(self, listing_id: str, version: int) -> bool:
        """Drop a listing (if `version` is newer than what the index has); remembers the version."""
        ...

    def version_of(self, listing_id: str) -> int | None: ...

    def search(self, query: SearchQuery) -> SearchResult: ...

    def rebuild(self, docs: Iterable[ListingDoc], progress: Callable[[int], None] | None = None) -> int:
        """Build a fresh index from `docs` (the listings table) and switch to it at the end; returns the count."""
        ...

    def count(self) -> int:
        """Searchable documents."""
        ...

    def refresh(self) -> None:
        """Make every write so far visible to searches (a no-op where writes are visible at once)."""
        ...

    def close(self) -> None: ...
