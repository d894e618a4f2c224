"""The Elasticsearch adapter of the search port (official `elasticsearch` client).

Analysis, in the index's own mapping (no plugin needed):
- `cjk_text` (title, description): standard tokenizer → `cjk_width` (full-width → half-width) → `lowercase` →
  `cjk_bigram` (adjacent CJK characters become overlapping bigrams; a lone character stays itself) →
  `word_delimiter_graph` (latin/digit boundaries: "mate40" → mate 40). A query term is a `match_phrase` of its own
  bigrams, so it matches exactly the texts that contain it, at any length — the same semantics as the embedded
  FTS5 index, checked by the same contract suite.
- `cjk_unigram` (`*.uni` sub-fields): the standard tokenizer alone emits single CJK characters; a one-character
  query matches there.
Why bigrams (the `cjk` approach) rather than an n-gram analyzer: each position is indexed once (a 1–3-gram index is
about three times larger and ranks worse, since every n-gram of every word matches), and rather than IK or
smartcn: those are plugins a stock Elasticsearch does not have.

Versions: documents are written with `version_type=external` (the listing's version), so Elasticsearch itself
refuses an older write; a removal writes a tombstone (`live: false`) under its version instead of deleting, so a
late publish cannot resurrect it. Searches filter `live: true`.

Ranking: BM25 over title (boost 4) and description; a query of several terms adds, as an optional clause, the
title clauses of all its terms together, so a listing whose title names every term ranks above a short title that
names one term and a description that names the others (an accessory "保护壳 九成新" whose description says
iPhone would otherwise outrank the phones for "九成新 iPhone": its two-word title scores high on its own).

Rebuild: a new concrete index `<alias>-<timestamp>` is bulk-loaded, then the alias moves to it in one
`update_aliases` call, and the old index is deleted.

Deep pages: Elasticsearch refuses from + size past `index.max_result_window` (10,000), so a window that reaches past
it is read with `search_after` in pages of up to 10,000 hits (every sort ends with the unique listing_id, so the
pages neither overlap nor skip). Each page is a separate search, not one point in time: writes between them can
shift the rows, as they can between two pages the API serves anyway.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from elasticsearch import ConflictError, Elasticsearch, NotFoundError, helpers

from ..domain import text
from .port import FACETS, ListingDoc, SearchHit, SearchQuery, SearchResult, region_prefix

SETTINGS: dict[str, Any] = {
    "number_of_shards": 1,
    "analysis": {
        "filter": {
            "latin_parts": {
                "type": "word_delimiter_graph",
                "split_on_numerics": True,
                "split_on_case_change": True,
                "generate_word_parts": True,
                "generate_number_parts": True,
                "preserve_original": False,
                "catenate_all": False,
                "catenate_words": False,
                "catenate_numbers": False,
            },
        },
        "analyzer": {
            "cjk_text": {
                "type": "custom",
                "tokenizer": "standard",
                "filter": ["cjk_width", "lowercase", "cjk_bigram", "latin_parts"],
            },
            "cjk_unigram": {"type": "custom", "tokenizer": "standard", "filter": ["cjk_width", "lowercase"]},
        },
    },
}

MAPPINGS: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "listing_id": {"type": "keyword"},
        "live": {"type": "boolean"},
        "version": {"type": "long"},
        "seller_id": {"type": "keyword"},
        "title": {
            "type": "text",
            "analyzer": "cjk_text",
            "fields": {
                "uni": {"type": "text", "analyzer": "cjk_unigram"},
                "raw": {"type": "keyword", "ignore_above": 256},
            },
        },
        "description": {
            "type": "text",
            "analyzer": "cjk_text",
            "fields": {"uni": {"type": "text", "analyzer": "cjk_unigram"}},
        },
        "category": {"type": "keyword"},
        "condition": {"type": "keyword"},
        "city_code": {"type": "keyword"},
        "price_fen": {"type": "long"},
        "published_at": {"type": "date"},
    },
}

TITLE_BOOST = 4.0
MAX_RESULT_WINDOW = 10_000  # Elasticsearch's default index.max_result_window


def _source(doc: ListingDoc) -> dict[str, Any]:
    return {
        "listing_id": doc.listing_id,
        "live": True,
        "version": doc.version,
        "seller_id": doc.seller_id,
        "title": doc.title,
        "description": doc.description,
        "category": doc.category,
        "condition": doc.condition,
        "city_code": doc.city_code,
        "price_fen": doc.price_fen,
        "published_at": doc.published_at.astimezone(UTC).isoformat(),
    }


class ElasticSearchIndex:
    name = "elasticsearch"

    def __init__(
        self,
        url: str,
        alias: str = "listings",
        drop_on_close: bool = False,
        client: Elasticsearch | None = None,
    ):
        self.client = client or Elasticsearch(url, request_timeout=30, retry_on_timeout=True, max_retries=3)
        self.alias = alias
        self.drop_on_close = drop_on_close
        if not self.client.indices.exists_alias(name=alias):
            self._create(self._new_name(), with_alias=True)

    # --- indices ---------------------------------------------------------------------------------------------
    def _new_name(self) -> str:
        return f"{self.alias}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def _create(self, name: str, with_alias: bool) -> None:
        body: dict[str, Any] = {"settings": SETTINGS, "mappings": MAPPINGS}
        if with_alias:
            body["aliases"] = {self.alias: {"is_write_index": True}}
        self.client.indices.create(index=name, **body)

    def _concrete(self) -> list[str]:
        try:
            return sorted(self.client.indices.get_alias(name=self.alias).keys())
        except NotFoundError:
            return []

    def close(self) -> None:
        if self.drop_on_close:
            for name in self._concrete():
                self.client.indices.delete(index=name, ignore_unavailable=True)
        self.client.close()

    def refresh(self) -> None:
        self.client.indices.refresh(index=self.alias)

    # --- writes ----------------------------------------------------------------------------------------------
    def upsert(self, docs: list[ListingDoc]) -> int:
        if not docs:
            return 0
        ok = 0
        for _, item in helpers.streaming_bulk(
            self.client, self._actions(self.alias, docs), raise_on_error=False, raise_on_exception=True
        ):
            res = next(iter(item.values()))
            if res.get("status") in (200, 201):
                ok += 1
            elif res.get("status") != 409:  # 409: not newer than what the index holds
                raise RuntimeError(f"elasticsearch refused {res.get('_id')}: {res.get('error')}")
        return ok

    @staticmethod
    def _actions(index: str, docs: Iterable[ListingDoc]) -> Iterator[dict[str, Any]]:
        for d in docs:
            yield {
                "_op_type": "index",
                "_index": index,
                "_id": d.listing_id,
                "version": d.version,
                "version_type": "external",
                "_source": _source(d),
            }

    def remove(self, listing_id: str, version: int) -> bool:
        try:
            cur = self.client.get(index=self.alias, id=listing_id, source_includes=["live"])
            was_live = bool(cur["_source"].get("live"))
        except NotFoundError:
            was_live = False
        try:
            self.client.index(
                index=self.alias,
                id=listing_id,
                version=version,
                version_type="external",
                document={"listing_id": listing_id, "live": False, "version": version},
            )
        except ConflictError:
            return False
        return was_live

    def version_of(self, listing_id: str) -> int | None:
        try:
            return int(self.client.get(index=self.alias, id=listing_id, source=False)["_version"])
        except NotFoundError:
            return None

    def count(self) -> int:
        return int(self.client.count(index=self.alias, query={"term": {"live": True}})["count"])

    def rebuild(self, docs: Iterable[ListingDoc], progress: Callable[[int], None] | None = None) -> int:
        new = self._new_name()
        self._create(new, with_alias=False)
        n = 0
        try:
            for ok, item in helpers.streaming_bulk(
                self.client, self._actions(new, docs), chunk_size=2000, raise_on_error=False
            ):
                if not ok and next(iter(item.values())).get("status") != 409:
                    raise RuntimeError(f"elasticsearch refused a document: {item}")
                n += 1 if ok else 0
                if progress:
                    progress(1)
            self.client.indices.refresh(index=new)
        except BaseException:
            self.client.indices.delete(index=new, ignore_unavailable=True)
            raise
        old = self._concrete()
        actions: list[dict[str, Any]] = [{"remove": {"index": o, "alias": self.alias}} for o in old]
        actions.append({"add": {"index": new, "alias": self.alias, "is_write_index": True}})
        self.client.indices.update_aliases(actions=actions)  # one atomic switch
        for o in old:
            self.client.indices.delete(index=o, ignore_unavailable=True)
        return n

    # --- reads -----------------------------------------------------------------------------------------------
    def _query(self, q: SearchQuery) -> dict[str, Any]:
        must: list[dict[str, Any]] = []
        in_title: list[dict[str, Any]] = []
        terms = text.parse_query(q.q)
        for term in terms:
            if term.single_char is not None:
                in_title.append(
                    {"match_phrase": {"title.uni": {"query": term.single_char, "boost": TITLE_BOOST}}}
                )
                must.append(
                    {
                        "multi_match": {
                            "query": term.single_char,
                            "fields": [f"title.uni^{TITLE_BOOST}", "description.uni"],
                        }
                    }
                )
            else:
                in_title.append({"match_phrase": {"title": {"query": term.text, "boost": TITLE_BOOST}}})
                must.append(
                    {
                        "bool": {
                            "should": [
                                {"match_phrase": {"title": {"query": term.text, "boost": TITLE_BOOST}}},
                                {"match_phrase": {"description": {"query": term.text}}},
                            ],
                            "minimum_should_match": 1,
                        }
                    }
                )
        filters: list[dict[str, Any]] = [{"term": {"live": True}}]
        if q.category:
            filters.append(
                {"term": {"category": q.category}}
                if "." in q.category
                else {"prefix": {"category": q.category + "."}}
            )
        if q.city_code:
            prefix = region_prefix(q.city_code)
            filters.append(
                {"term": {"city_code": prefix}}
                if prefix == q.city_code
                else {"prefix": {"city_code": prefix}}
            )
        if q.condition:
            filters.append({"term": {"condition": q.condition}})
        if q.min_price_fen is not None or q.max_price_fen is not None:
            rng: dict[str, int] = {}
            if q.min_price_fen is not None:
                rng["gte"] = q.min_price_fen
            if q.max_price_fen is not None:
                rng["lte"] = q.max_price_fen
            filters.append({"range": {"price_fen": rng}})
        query: dict[str, Any] = {"must": must or [{"match_all": {}}], "filter": filters}
        if (
            len(terms) > 1
        ):  # every term in the title: scored once more (optional; the must clauses decide the hits)
            query["should"] = [{"bool": {"must": in_title}}]
        return {"bool": query}

    def search(self, q: SearchQuery) -> SearchResult:
        if q.q.strip() and not text.parse_query(q.q):
            return SearchResult([], 0, {f: {} for f in FACETS})
        ranked = q.sort == "relevance" and bool(q.q.strip())
        sort = {
            "relevance": ["_score", {"published_at": "desc"}, {"listing_id": "asc"}]
            if ranked
            else [{"published_at": "desc"}, {"listing_id": "asc"}],
            "newest": [{"published_at": "desc"}, {"listing_id": "asc"}],
            "price_asc": [{"price_fen": "asc"}, {"published_at": "desc"}, {"listing_id": "asc"}],
            "price_desc": [{"price_fen": "desc"}, {"published_at": "desc"}, {"listing_id": "asc"}],
        }[q.sort]
        body: dict[str, Any] = {
            "query": self._query(q),
            "sort": sort,
            "track_total_hits": True,
            "aggs": {f: {"terms": {"field": f, "size": 200}} for f in FACETS},
        }
        source = ["listing_id", "title", "category", "condition", "city_code", "price_fen", "published_at"]
        if q.offset + q.limit <= MAX_RESULT_WINDOW:
            res = self.client.search(
                index=self.alias, from_=q.offset, size=q.limit, source_includes=source, **body
            )
            page = res["hits"]["hits"]
        else:
            res, page = self._deep_window(body, source, q.offset, q.limit)
        hits = [
            SearchHit(
                listing_id=h["_source"]["listing_id"],
                title=h["_source"]["title"],
                category=h["_source"]["category"],
                condition=h["_source"]["condition"],
                city_code=h["_source"]["city_code"],
                price_fen=int(h["_source"]["price_fen"]),
                published_at=datetime.fromisoformat(h["_source"]["published_at"]),
                score=h.get("_score") if ranked else None,
            )
            for h in page
        ]
        facets = {
            f: {b["key"]: int(b["doc_count"]) for b in res["aggregations"][f]["buckets"]} for f in FACETS
        }
        return SearchResult(hits, int(res["hits"]["total"]["value"]), facets)

    def _deep_window(
        self, body: dict[str, Any], source: list[str], offset: int, limit: int
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Hits offset..offset+limit past max_result_window: search_after from the top, in pages of up to 10,000
        (the first reply also brings the total and the facets)."""
        first: Any = None
        after: list[Any] | None = None
        skip, page = offset, []
        while len(page) < limit:
            size = min(MAX_RESULT_WINDOW, skip + limit - len(page))
            extra: dict[str, Any] = {"search_after": after} if after is not None else {}
            part = self.client.search(
                index=self.alias,
                size=size,
                source_includes=source,
                **(body if first is None else {k: v for k, v in body.items() if k != "aggs"}),
                **extra,
            )
            first = first if first is not None else part
            got = part["hits"]["hits"]
            page.extend(got[skip:])
            skip = max(0, skip - len(got))
            if len(got) < size:
                break
            after = got[-1]["sort"]
        return first, page[:limit]
