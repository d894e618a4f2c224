"""The embedded index's rank window: past `rank_window` hits, BM25 scores only the most recently indexed ones; the
total, the facets and the other sorts still cover every hit."""

from __future__ import annotations

from services.listings.search.port import SearchQuery
from services.listings.search.sqlite_fts import SqliteSearchIndex

from .test_search_contract import doc


def test_past_the_window_only_the_newest_hits_are_scored(tmp_path):
    full = SqliteSearchIndex(tmp_path / "full.db")
    windowed = SqliteSearchIndex(tmp_path / "windowed.db", rank_window=4)
    docs = [
        doc(
            f"d{i}",
            ("手机 " * (1 + i % 3)) + f"第{i}台",
            minutes=i,
            city_code="110105" if i % 2 else "310101",
        )
        for i in range(10)
    ]
    for ix in (full, windowed):
        ix.upsert(docs)
    a, b = full.search(SearchQuery(q="手机", limit=20)), windowed.search(SearchQuery(q="手机", limit=20))
    assert a.total == b.total == 10 and a.facets == b.facets
    assert a.scored is None and b.scored == 4  # the reply says how many were ranked by BM25
    assert (
        windowed.search(SearchQuery(q="手机", city_code="110105")).scored == 2
    )  # of the 5 hits left: d7, d9
    got = [h.listing_id for h in b.hits]
    # the four most recently indexed are scored and come first, in BM25 order; the rest follow, newest first
    assert set(got[:4]) == {"d6", "d7", "d8", "d9"} and all(h.score is not None for h in b.hits[:4])
    assert got[4:] == ["d5", "d4", "d3", "d2", "d1", "d0"] and all(h.score is None for h in b.hits[4:])
    expected_first = [h.listing_id for h in a.hits if h.listing_id in {"d6", "d7", "d8", "d9"}]
    assert got[:4] == expected_first
    # other sorts are not affected
    for sort in ("price_asc", "newest"):
        q = SearchQuery(q="手机", sort=sort, limit=20)
        assert [h.listing_id for h in full.search(q).hits] == [h.listing_id for h in windowed.search(q).hits]
    # under the window nothing changes
    small = SearchQuery(q="第1台")
    assert [h.listing_id for h in full.search(small).hits] == [
        h.listing_id for h in windowed.search(small).hits
    ]
