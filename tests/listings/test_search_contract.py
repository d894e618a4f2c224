"""One contract suite for the search port, run against every adapter: the embedded SQLite FTS5 index, the
Elasticsearch adapter against the fake Elasticsearch (tests/support/fake_elasticsearch: no Elasticsearch can be
installed on the CI machine) and, when ELASTICSEARCH_URL points at a real node (compose starts one), the
Elasticsearch adapter against that node too. Without the URL the `elasticsearch` parameter is not generated at all
(CI never skips): a developer who wants the real-node run sets ELASTICSEARCH_URL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.listings.search.port import ListingDoc, SearchIndex, SearchQuery

ES_URL = os.environ.get("ELASTICSEARCH_URL", "")
ADAPTERS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("elasticsearch-fake", id="elasticsearch-fake"),
    *([pytest.param("elasticsearch", id="elasticsearch", marks=pytest.mark.elasticsearch)] if ES_URL else []),
]
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make(adapter: str, tmp_path, request) -> SearchIndex:  # noqa: ANN001
    if adapter == "sqlite":
        from services.listings.search.sqlite_fts import SqliteSearchIndex

        return SqliteSearchIndex(tmp_path / f"search-{uuid.uuid4().hex[:6]}.db")
    from services.listings.search.elastic import ElasticSearchIndex

    url = request.getfixturevalue("fake_elasticsearch_url") if adapter == "elasticsearch-fake" else ES_URL
    return ElasticSearchIndex(url, f"test-listings-{uuid.uuid4().hex[:8]}", drop_on_close=True)


@pytest.fixture(params=ADAPTERS)
def index(request, tmp_path) -> Iterator[SearchIndex]:  # noqa: ANN001
    ix = make(request.param, tmp_path, request)
    yield ix
    ix.close()


def doc(
    lid: str,
    title: str,
    *,
    description: str = "",
    category: str = "electronics.phone",
    condition: str = "good",
    price_fen: int = 100_00,
    city_code: str = "110105",
    minutes: int = 0,
    version: int = 1,
) -> ListingDoc:
    return ListingDoc(
        listing_id=lid,
        version=version,
        seller_id="s1",
        title=title,
        description=description,
        category=category,
        condition=condition,
        price_fen=price_fen,
        city_code=city_code,
        published_at=T0 + timedelta(minutes=minutes),
    )


CORPUS = [
    doc("p1", "华为 Mate 40 Pro 手机 8+256G", description="九成新，自用", price_fen=1899_00, minutes=1),
    doc(
        "p2",
        "华为 P30 手机 全网通",
        description="屏幕有划痕",
        condition="fair",
        price_fen=899_00,
        minutes=2,
        city_code="310101",
    ),
    doc("p3", "苹果 iPhone 13 手机 128G", description="国行 电池健康 88%", price_fen=2999_00, minutes=3),
    doc(
        "p4",
        "小米扫地机器人 2代",
        description="带充电座",
        category="appliance.small",
        price_fen=599_00,
        minutes=4,
    ),
    doc(
        "p5",
        "中华为民 书法字帖",
        description="毛笔字练习",
        category="books.general",
        price_fen=20_00,
        minutes=5,
    ),
    doc(
        "p6",
        "手机支架 铝合金",
        description="适配华为苹果手机",
        category="electronics.audio",
        price_fen=15_00,
        minutes=6,
    ),
    doc(
        "p7",
        "《三体》全集 刘慈欣",
        description="图书 九成新",
        category="books.general",
        price_fen=45_00,
        minutes=7,
        city_code="310101",
    ),
    doc(
        "p8",
        "ＩＰＨＯＮＥ　１２ 手机壳",
        description="全角标题",
        category="electronics.audio",
        price_fen=9_00,
        minutes=8,
    ),
]


def ids(res) -> list[str]:  # noqa: ANN001
    return [h.listing_id for h in res.hits]


def load(index: SearchIndex, docs=CORPUS) -> None:  # noqa: ANN001
    assert index.upsert(list(docs)) == len(docs)
    index.refresh()


def test_chinese_of_any_length_matches(index):
    load(index)
    assert set(ids(index.search(SearchQuery(q="手机")))) == {"p1", "p2", "p3", "p6", "p8"}
    assert set(ids(index.search(SearchQuery(q="华为")))) == {"p1", "p2", "p5", "p6"}
    assert set(ids(index.search(SearchQuery(q="华为 手机")))) == {"p1", "p2", "p6"}  # AND
    assert ids(index.search(SearchQuery(q="扫地机器人"))) == ["p4"]
    assert ids(index.search(SearchQuery(q="机器人"))) == ["p4"]
    assert set(ids(index.search(SearchQuery(q="书")))) == {"p5", "p7"}  # one character
    assert ids(index.search(SearchQuery(q="三体"))) == ["p7"]
    assert index.search(SearchQuery(q="扫地手机")).total == 0  # not a substring anywhere
    assert index.search(SearchQuery(q="!!! ...")).total == 0


def test_latin_and_digits_and_full_width_fold(index):
    load(index)
    assert set(ids(index.search(SearchQuery(q="iphone")))) == {"p3", "p8"}
    assert ids(index.search(SearchQuery(q="iPhone13"))) == ["p3"]
    assert ids(index.search(SearchQuery(q="mate40"))) == ["p1"]
    assert ids(index.search(SearchQuery(q="iphone 12"))) == ["p8"]


def test_relevance_prefers_words_in_the_title(index):
    load(index)
    hits = ids(index.search(SearchQuery(q="华为 手机")))
    assert hits.index("p6") > max(hits.index("p1"), hits.index("p2"))  # p6 names them only in its description


def test_facets_count_the_hits_of_the_query(index):
    load(index)
    res = index.search(SearchQuery(q="手机", limit=2))
    assert res.total == 5 and len(res.hits) == 2
    assert res.facets["category"] == {"electronics.phone": 3, "electronics.audio": 2}
    assert res.facets["city_code"] == {"110105": 4, "310101": 1}
    assert res.facets["condition"] == {"good": 4, "fair": 1}
    everything = index.search(SearchQuery())
    assert everything.total == len(CORPUS) and everything.facets["category"]["books.general"] == 2


def test_filters(index):
    load(index)
    assert set(ids(index.search(SearchQuery(q="手机", category="electronics.phone")))) == {"p1", "p2", "p3"}
    assert set(ids(index.search(SearchQuery(category="books")))) == {"p5", "p7"}  # a family
    assert ids(index.search(SearchQuery(q="华为", city_code="310101"))) == ["p2"]
    # a city or a province covers the counties inside it (the listings carry counties): with a query and without
    assert set(ids(index.search(SearchQuery(q="手机", city_code="110100")))) == {"p1", "p3", "p6", "p8"}
    assert set(ids(index.search(SearchQuery(q="手机", city_code="110000")))) == {"p1", "p3", "p6", "p8"}
    assert ids(index.search(SearchQuery(q="华为", city_code="310000"))) == ["p2"]
    assert set(ids(index.search(SearchQuery(city_code="310100")))) == {"p2", "p7"}
    assert index.search(SearchQuery(city_code="110000")).total == 6
    assert index.search(SearchQuery(city_code="110100", q="三体")).total == 0
    assert index.search(SearchQuery(city_code="440300")).total == 0
    assert index.search(SearchQuery(city_code="110101")).total == 0  # another county of the same city
    assert ids(index.search(SearchQuery(q="手机", condition="fair"))) == ["p2"]
    assert set(ids(index.search(SearchQuery(q="手机", min_price_fen=900_00, max_price_fen=2999_00)))) == {
        "p1",
        "p3",
    }


def test_sorts_and_pages(index):
    load(index)
    q = SearchQuery(q="手机", sort="price_asc")
    assert ids(index.search(q)) == ["p8", "p6", "p2", "p1", "p3"]
    assert ids(index.search(SearchQuery(q="手机", sort="price_desc"))) == ["p3", "p1", "p2", "p6", "p8"]
    assert ids(index.search(SearchQuery(q="手机", sort="newest"))) == ["p8", "p6", "p3", "p2", "p1"]
    assert ids(index.search(SearchQuery(sort="newest", limit=3))) == ["p8", "p7", "p6"]
    pages = [ids(index.search(SearchQuery(q="手机", sort="price_asc", limit=2, offset=o))) for o in (0, 2, 4)]
    assert pages == [["p8", "p6"], ["p2", "p1"], ["p3"]]


def test_versions_decide_and_removals_are_remembered(index):
    load(index)
    assert index.upsert([doc("p1", "华为 Mate 40 旧标题", version=1)]) == 0  # not newer: ignored
    assert index.upsert([doc("p1", "荣耀 Magic 手机", version=2)]) == 1
    index.refresh()
    assert "p1" not in ids(index.search(SearchQuery(q="华为")))
    assert ids(index.search(SearchQuery(q="荣耀"))) == ["p1"]
    assert index.remove("p1", 3)
    assert not index.remove("p1", 2)
    assert (
        index.upsert([doc("p1", "荣耀 Magic 手机", version=2)]) == 0
    )  # a late publish does not resurrect it
    index.refresh()
    assert index.search(SearchQuery(q="荣耀")).total == 0 and index.version_of("p1") == 3
    assert index.upsert([doc("p1", "荣耀 Magic 手机 重新上架", version=4)]) == 1
    index.refresh()
    assert ids(index.search(SearchQuery(q="重新上架"))) == ["p1"]
    assert index.count() == len(CORPUS)


def test_rebuild_replaces_everything(index):
    load(index)
    seen: list[int] = []
    n = index.rebuild(
        iter(
            [
                doc("n1", "全新 戴森吹风机", category="appliance.small"),
                doc("n2", "二手 自行车 捷安特", category="vehicles.bicycle"),
            ]
        ),
        seen.append,
    )
    index.refresh()
    assert n == 2 and sum(seen) == 2 and index.count() == 2
    assert index.search(SearchQuery(q="手机")).total == 0
    assert ids(index.search(SearchQuery(q="吹风机"))) == ["n1"]


def test_pages_past_ten_thousand_hits(index):
    """Deep pages come back in order, without gaps or repeats (Elasticsearch refuses from + size past 10,000: the
    adapter reads such windows with search_after)."""
    n = 10_050
    index.rebuild(iter(doc(f"d{i:05d}", f"手机 第{i}台", price_fen=i, minutes=i % 7) for i in range(n)))
    index.refresh()
    for offset, limit in ((9_990, 20), (10_030, 40), (0, n)):
        res = index.search(SearchQuery(q="手机", sort="price_asc", limit=limit, offset=offset))
        assert res.total == n and res.facets["category"] == {"electronics.phone": n}
        assert ids(res) == [f"d{i:05d}" for i in range(offset, min(n, offset + limit))]


CJK = st.sampled_from(list("华为小米苹果手机电脑平板耳机冰箱洗衣机空调沙发书桌自行车全新二手九成新正品国行"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(titles=st.lists(st.text(CJK, min_size=2, max_size=12), min_size=1, max_size=8), data=st.data())
def test_any_substring_of_a_title_finds_it(index, titles, data):
    """Recall is complete for substrings: every 1..4-character piece of a title finds that listing."""
    index.rebuild(iter(doc(f"h{i}", t, version=1) for i, t in enumerate(titles)))
    index.refresh()
    i = data.draw(st.integers(0, len(titles) - 1))
    t = titles[i]
    start = data.draw(st.integers(0, len(t) - 1))
    piece = t[start : start + data.draw(st.integers(1, 4))]
    got = set(ids(index.search(SearchQuery(q=piece, limit=100))))
    assert f"h{i}" in got
    assert got == {f"h{j}" for j, other in enumerate(titles) if piece in other}
