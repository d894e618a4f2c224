"""The embedded index's cache of recent queries' hits: an answer from the cache is always the answer the index gives
without it (every write, from this index object or another on the same file, starts a new state)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.listings.search.port import SearchIndex, SearchQuery
from services.listings.search.sqlite_fts import SqliteSearchIndex

from .test_search_contract import doc

WORDS = ["华为", "手机", "小米", "平板", "书", "九成新", "iPhone 13", "耳机"]
QUERIES = ["手机", "华为", "华为 手机", "书", "iphone", "九成新 耳机", "平板"]


def answer(index: SearchIndex, q: SearchQuery) -> tuple:
    res = index.search(q)
    return [(h.listing_id, h.score) for h in res.hits], res.total, res.facets


def test_repeats_are_served_from_the_cache_until_a_write(tmp_path):
    ix = SqliteSearchIndex(tmp_path / "a.db")
    ix.upsert([doc(f"d{i}", f"华为 手机 {i}号", city_code="310101" if i % 2 else "110105") for i in range(5)])
    first = answer(ix, SearchQuery(q="手机"))
    misses = ix.cache.misses
    # the same query with a filter, another sort or page: the same hits, from the cache
    assert answer(ix, SearchQuery(q="手机")) == first
    assert ix.search(SearchQuery(q="手机", city_code="310101")).total == 2
    assert ix.search(SearchQuery(q="手机", limit=2, offset=2)).total == 5
    assert ix.cache.misses == misses and ix.cache.hits >= 3
    ix.upsert([doc("new", "全新 手机")])
    assert ix.search(SearchQuery(q="手机")).total == 6 and ix.cache.misses == misses + 1
    assert ix.remove("new", 2)
    assert ix.search(SearchQuery(q="手机")).total == 5
    ix.rebuild(iter([]))
    assert ix.search(SearchQuery(q="手机")).total == 0


def test_a_write_through_another_connection_is_seen(tmp_path):
    """The indexer runs in the background process: the counter is read from the file, in the query's snapshot."""
    reader, writer = SqliteSearchIndex(tmp_path / "a.db"), SqliteSearchIndex(tmp_path / "a.db")
    writer.upsert([doc("d1", "小米 平板 5")])
    assert reader.search(SearchQuery(q="平板")).total == 1
    writer.upsert([doc("d2", "华为 平板 MatePad")])
    assert {h.listing_id for h in reader.search(SearchQuery(q="平板")).hits} == {"d1", "d2"}
    writer.remove("d1", 2)
    assert [h.listing_id for h in reader.search(SearchQuery(q="平板")).hits] == ["d2"]
    for ix in (reader, writer):
        ix.close()


write = st.one_of(
    st.tuples(
        st.just("upsert"),
        st.integers(0, 5),
        st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
        st.sampled_from(["110105", "310101"]),
    ),
    st.tuples(st.just("remove"), st.integers(0, 5)),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(write, min_size=1, max_size=12), sort=st.sampled_from(["relevance", "price_asc"]))
def test_a_cached_answer_is_the_answer_without_the_cache(tmp_path_factory, writes, sort):
    """After every write, every query (and one with a filter) answers the same with and without the cache, the
    first time and again (from the cache)."""
    d = tmp_path_factory.mktemp("cache")
    cached = SqliteSearchIndex(d / "cached.db", rank_window=3)
    plain = SqliteSearchIndex(d / "plain.db", rank_window=3, cache_entries=0)
    versions: dict[int, int] = {}
    try:
        for o in writes:
            n = o[1]
            versions[n] = versions.get(n, 0) + 1
            if o[0] == "upsert":
                d_ = doc(f"d{n}", " ".join(o[2]), city_code=o[3], version=versions[n], minutes=len(versions))
                assert cached.upsert([d_]) == plain.upsert([d_])
            else:
                assert cached.remove(f"d{n}", versions[n]) == plain.remove(f"d{n}", versions[n])
            for text in QUERIES:
                for q in (SearchQuery(q=text, sort=sort), SearchQuery(q=text, sort=sort, city_code="310101")):
                    expected = answer(plain, q)
                    assert answer(cached, q) == expected, (o, q)
                    assert answer(cached, q) == expected, (o, q)
        assert cached.cache.hits
    finally:
        cached.close()
        plain.close()


def test_the_cache_is_bounded_by_entries_and_rows():
    import numpy as np

    from services.listings.search.hit_cache import HitCache

    cache = HitCache(entries=2, max_rows=10)

    def hits(n: int):  # noqa: ANN202
        return np.arange(n, dtype=np.int64), None

    cache.put(("a", True), 1, hits(4))
    cache.put(("b", True), 1, hits(4))
    assert cache.get(("a", True), 1) is not None  # a is now the most recently used
    cache.put(("c", True), 1, hits(4))  # over two entries: b goes
    assert cache.get(("b", True), 1) is None and cache.get(("a", True), 1) is not None
    cache.put(("d", True), 1, hits(8))  # over ten rows: the least recently used go until it fits
    assert cache.get(("c", True), 1) is None and cache.get(("a", True), 1) is None
    assert cache.get(("d", True), 1) is not None
    cache.put(("e", True), 1, hits(11))  # larger than the whole cache: not kept
    assert cache.get(("e", True), 1) is None and cache.get(("d", True), 1) is not None
    assert cache.get(("d", True), 2) is None  # another state of the index: never served
