"""The fake Elasticsearch (tests/support/fake_elasticsearch) against Elasticsearch's documented behaviour: the
contract suite trusts it, so its fidelity is asserted here, through the official client where a reply is involved.
Each expectation names the reference page it comes from."""

from __future__ import annotations

import json
import math
import urllib.request
import uuid

import pytest
from elasticsearch import BadRequestError, ConflictError, Elasticsearch, NotFoundError

from services.listings.search.elastic import MAPPINGS, SETTINGS
from tests.support.fake_elasticsearch.analysis import Analyzer, Token, WordDelimiter, cjk_bigram, lowercase
from tests.support.fake_elasticsearch.index import Index


@pytest.fixture
def es(fake_elasticsearch_url):
    client = Elasticsearch(fake_elasticsearch_url)
    yield client
    client.close()


@pytest.fixture
def listings_analyzers():
    return Index("analysis-only", SETTINGS, MAPPINGS).analyzers


def test_cjk_bigram_as_documented():
    # https://www.elastic.co/docs/reference/text-analysis/analysis-cjk-bigram-tokenfilter: standard + cjk_bigram
    assert Analyzer((cjk_bigram,)).terms("東京都は、日本の首都であり") == [
        *["東京", "京都", "都は", "日本", "本の", "の首", "首都", "都で", "であ", "あり"]
    ]


def test_the_listings_analyzers_on_mixed_chinese_and_latin(listings_analyzers):
    # CJK runs become bigrams, non-CJK input passes cjk_bigram unmodified (then word_delimiter_graph splits
    # letters from digits); a lone CJK character stays a unigram; full-width forms fold (cjk_width)
    text = listings_analyzers["cjk_text"]
    assert text.terms("华为Mate40手机") == ["华为", "mate", "40", "手机"]
    assert text.terms("扫地机器人 2代") == ["扫地", "地机", "机器", "器人", "2", "代"]
    assert text.terms("ＩＰＨＯＮＥ　１２ 手机壳") == ["iphone", "12", "手机", "机壳"]
    assert text.terms("华为 手机") == ["华为", "手机"]  # a space is a gap: no 为手 bigram
    # the standard tokenizer alone: one token per ideograph (UAX #29), latin/digit words whole
    assert listings_analyzers["cjk_unigram"].terms("华为Mate40手机") == ["华", "为", "mate40", "手", "机"]


def test_word_delimiter_graph_as_documented():
    # https://www.elastic.co/docs/reference/text-analysis/analysis-word-delimiter-graph-tokenfilter (keyword
    # tokenizer + word_delimiter_graph with its defaults)
    text = "Neil's-Super-Duper-XL500--42+AutoCoder"
    parts = [t.text for t in WordDelimiter()([Token(text, "<ALPHANUM>", 0, len(text))])]
    assert parts == ["Neil", "Super", "Duper", "XL", "500", "42", "Auto", "Coder"]
    assert [t.text for t in lowercase([Token("ÀB", "<ALPHANUM>", 0, 2)])] == ["àb"]


def test_replies_carry_the_product_header_and_the_compatible_media_type(fake_elasticsearch_url):
    # the 8.x/9.x clients refuse a 2xx without X-Elastic-Product and send compatible-with media types
    req = urllib.request.Request(
        fake_elasticsearch_url + "/",
        headers={"Accept": "application/vnd.elasticsearch+json; compatible-with=9"},
    )
    with urllib.request.urlopen(req) as resp:
        assert resp.headers["X-Elastic-Product"] == "Elasticsearch"
        assert resp.headers["Content-Type"] == "application/vnd.elasticsearch+json;compatible-with=9"
        assert json.load(resp)["tagline"] == "You Know, for Search"


def _index(es) -> str:
    name = f"fidelity-{uuid.uuid4().hex[:8]}"
    es.indices.create(index=name, settings=SETTINGS, mappings=MAPPINGS)
    return name


def test_external_versions_conflict_unless_newer(es):
    # https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-index (version_type=external)
    name = _index(es)
    doc = {"listing_id": "l1", "live": True, "version": 2}
    res = es.index(index=name, id="l1", version=2, version_type="external", document=doc)
    assert (res["result"], res["_version"], res.meta.status) == ("created", 2, 201)
    with pytest.raises(ConflictError) as e:
        es.index(index=name, id="l1", version=2, version_type="external", document=doc)
    err = e.value.body["error"]
    assert e.value.meta.status == 409 and err["type"] == "version_conflict_engine_exception"
    assert (
        err["reason"]
        == "[l1]: version conflict, current version [2] is higher or equal to the one provided [2]"
    )
    assert err["root_cause"][0]["type"] == "version_conflict_engine_exception"
    # the same refusal, as one item of a bulk request (the request itself succeeds)
    bulk = es.bulk(
        operations=[
            {"index": {"_index": name, "_id": "l1", "version": 1, "version_type": "external"}},
            doc,
            {"index": {"_index": name, "_id": "l1", "version": 3, "version_type": "external"}},
            doc,
        ]
    )
    assert bulk["errors"] is True
    assert bulk["items"][0]["index"]["status"] == 409
    assert bulk["items"][0]["index"]["error"]["type"] == "version_conflict_engine_exception"
    assert bulk["items"][1]["index"]["status"] == 200 and bulk["items"][1]["index"]["_version"] == 3
    assert es.get(index=name, id="l1", source=False)["_version"] == 3


def test_writes_are_searchable_after_a_refresh_and_gettable_at_once(es):
    # https://www.elastic.co/docs/manage-data/data-store/near-real-time-search
    name = _index(es)
    es.index(index=name, id="l1", document={"listing_id": "l1", "live": True, "title": "手机"})
    assert es.get(index=name, id="l1", source_includes=["live"])["_source"] == {"live": True}
    assert es.count(index=name)["count"] == 0
    es.indices.refresh(index=name)
    assert es.count(index=name, query={"term": {"live": True}})["count"] == 1
    with pytest.raises(NotFoundError):
        es.get(index=name, id="missing")


def test_bm25_and_bool_sums_as_documented(es):
    # https://www.elastic.co/guide/en/elasticsearch/reference/8.8/index-modules-similarity.html (BM25, k1 1.2, b 0.75):
    # idf = ln(1 + (N - n + 0.5) / (n + 0.5)), tf part = f / (f + k1 (1 - b + b dl / avgdl)); bool sums its
    # scoring clauses (https://www.elastic.co/docs/reference/query-languages/query-dsl/query-dsl-bool-query)
    name = _index(es)
    titles = {"a": "手机 手机 壳", "b": "手机", "c": "平板 电脑 支架"}  # 3, 1 and 3 terms
    for i, t in titles.items():
        es.index(index=name, id=i, document={"listing_id": i, "title": t})
    es.indices.refresh(index=name)

    def bm25(f: int, n: int, dl: int, boost: float = 1.0) -> float:
        avgdl, docs = 7 / 3, 3
        return boost * math.log(1 + (docs - n + 0.5) / (n + 0.5)) * f / (f + 1.2 * (0.25 + 0.75 * dl / avgdl))

    res = es.search(index=name, query={"match_phrase": {"title": {"query": "手机", "boost": 4}}})
    got = {h["_id"]: h["_score"] for h in res["hits"]["hits"]}
    assert got == pytest.approx({"a": bm25(2, 2, 3, 4), "b": bm25(1, 2, 1, 4)}, rel=1e-6)
    assert [h["_id"] for h in res["hits"]["hits"]] == ["b", "a"]  # the shorter title wins
    both = {
        "bool": {"must": [{"match_phrase": {"title": "手机"}}], "should": [{"match_phrase": {"title": "壳"}}]}
    }
    res = es.search(index=name, query=both)
    got = {h["_id"]: h["_score"] for h in res["hits"]["hits"]}
    assert got == pytest.approx({"a": bm25(2, 2, 3) + bm25(1, 1, 3), "b": bm25(1, 2, 1)}, rel=1e-6)

    # a phrase: its terms at consecutive positions; across a space no bigram joins the words
    def hits(phrase: str) -> int:
        return es.search(index=name, query={"match_phrase": {"title": phrase}})["hits"]["total"]["value"]

    assert (hits("平板 电脑"), hits("电脑 平板"), hits("电脑支架")) == (1, 0, 0)


def test_aliases_switch_atomically(es):
    # https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-indices-update-aliases
    old, new = _index(es), _index(es)
    alias = f"alias-{uuid.uuid4().hex[:8]}"
    es.indices.update_aliases(actions=[{"add": {"index": old, "alias": alias, "is_write_index": True}}])
    with pytest.raises(NotFoundError):  # the second action fails: the first is not applied either
        es.indices.update_aliases(
            actions=[
                {"add": {"index": new, "alias": alias}},
                {"remove": {"index": new, "alias": "no-such-alias"}},
            ]
        )
    assert list(es.indices.get_alias(name=alias)) == [old]
    with pytest.raises(BadRequestError):  # an alias is not a name an index can be deleted by
        es.indices.delete(index=alias)


def test_refuses_what_it_does_not_model_and_what_elasticsearch_refuses(es):
    name = _index(es)
    for query in ({"fuzzy": {"title": "手机"}}, {"match_phrase": {"title": {"query": "手机", "slop": 1}}}):
        with pytest.raises(BadRequestError) as e:
            es.search(index=name, query=query)
        assert e.value.error == "fake_not_implemented_exception"
    with pytest.raises(
        BadRequestError
    ) as e:  # https://www.elastic.co/docs/reference/elasticsearch/index-settings
        es.search(index=name, from_=9_995, size=10)
    assert "Result window is too large" in e.value.body["error"]["reason"]
    with pytest.raises(BadRequestError) as e:  # text fields have no doc values to sort on
        es.search(index=name, sort=[{"title": "asc"}])
    assert e.value.body["error"]["root_cause"][0]["type"] == "illegal_argument_exception"
    with pytest.raises(BadRequestError) as e:  # dynamic: strict
        es.index(index=name, id="x", document={"listing_id": "x", "colour": "red"})
    assert e.value.error == "strict_dynamic_mapping_exception"
    with pytest.raises(BadRequestError) as e:  # an analysis component the fake does not implement
        es.indices.create(
            index=f"refused-{uuid.uuid4().hex[:8]}",
            settings={"analysis": {"analyzer": {"a": {"type": "custom", "tokenizer": "ngram"}}}},
            mappings={"dynamic": "strict"},
        )
    assert e.value.error == "fake_not_implemented_exception"
