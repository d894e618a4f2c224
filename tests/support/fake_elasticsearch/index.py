"""One index of the fake Elasticsearch: mapping, versioned documents, refresh, the query DSL subset, BM25 scoring,
sorting, paging and terms aggregations — one primary shard, as the listings index declares.

References (Elasticsearch reference):
- mapping (`dynamic: strict`, text/keyword/long/date/boolean, multi-fields, ignore_above):
  https://www.elastic.co/docs/reference/elasticsearch/mapping-reference/dynamic
  https://www.elastic.co/docs/reference/elasticsearch/mapping-reference/multi-fields
- external versioning ("only if the given version is higher than the stored one", else 409
  version_conflict_engine_exception): https://www.elastic.co/docs/api/doc/elasticsearch/operation/operation-index
- near real-time search (a write is searchable after a refresh; GET by id is real-time):
  https://www.elastic.co/docs/manage-data/data-store/near-real-time-search
- bool (must/should score and sum, filter/must_not do not score; minimum_should_match defaults to 1 when there is
  no must/filter): https://www.elastic.co/docs/reference/query-languages/query-dsl/query-dsl-bool-query
- multi_match best_fields (a dis_max over per-field match queries; `field^boost`):
  https://www.elastic.co/docs/reference/query-languages/query-dsl/query-dsl-multi-match-query
- match_phrase (analysed positions, slop 0): https://www.elastic.co/docs/reference/query-languages/query-dsl/query-dsl-match-query-phrase
- term, prefix, range, match_all: https://www.elastic.co/docs/reference/query-languages/query-dsl/term-level-queries
- BM25 (k1 = 1.2, b = 0.75; per-field length norms): https://www.elastic.co/guide/en/elasticsearch/reference/8.8/index-modules-similarity.html
  computed as Lucene's BM25Similarity does (float arithmetic, lengths stored in one byte by SmallFloat, phrase idf =
  sum of its terms' idf, no (k1 + 1) factor since Lucene 8).
- sort (`_score` desc by default, fields asc; missing values last; text fields cannot be sorted), from/size and
  index.max_result_window (10,000), search_after, track_total_hits:
  https://www.elastic.co/docs/reference/elasticsearch/rest-apis/sort-search-results
  https://www.elastic.co/docs/reference/elasticsearch/rest-apis/paginate-search-results
  https://www.elastic.co/docs/reference/elasticsearch/index-settings/index-modules (max_result_window)
- terms aggregation (buckets by doc_count desc, then key asc; sum_other_doc_count):
  https://www.elastic.co/docs/reference/aggregations/search-aggregations-bucket-terms-aggregation

Not modelled (refused where a request could ask for it, documented in docs/listings.md otherwise): several shards
or indices per search, deleted documents still counting in term statistics until a merge (the fake's statistics are
those of a freshly merged index), periodic refresh (only an explicit refresh makes writes searchable).
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from .analysis import Analyzer, build_analyzers
from .errors import EsError, not_implemented

K1, B = np.float32(1.2), np.float32(0.75)


def f32(x: float) -> float:
    return float(np.float32(x))


# --- Lucene's SmallFloat: a document's length is stored in one byte -------------------------------------------
def _long_to_int4(i: int) -> int:
    bits = i.bit_length()
    if bits < 4:
        return i
    shift = bits - 4
    return ((i >> shift) & 0x07) | ((shift + 1) << 3)


def _int4_to_long(i: int) -> int:
    bits, shift = i & 0x07, (i >> 3) - 1
    return bits if shift == -1 else (bits | 0x08) << shift


_NUM_FREE = 255 - _long_to_int4(2**31 - 1)


def length_to_byte(n: int) -> int:
    return n if n < _NUM_FREE else _NUM_FREE + _long_to_int4(n - _NUM_FREE)


LENGTH_TABLE = [i if i < _NUM_FREE else _NUM_FREE + _int4_to_long(i - _NUM_FREE) for i in range(256)]


# --- mapping ----------------------------------------------------------------------------------------------------
TYPES = {"text", "keyword", "long", "date", "boolean"}
_FIELD_OPTIONS = {"text": {"type", "analyzer", "fields"}, "keyword": {"type", "ignore_above"}}


@dataclass(frozen=True)
class FieldSpec:
    path: str
    type: str
    analyzer: Analyzer | None = None
    ignore_above: int | None = None


def parse_mapping(mappings: dict[str, Any], analyzers: dict[str, Analyzer]) -> dict[str, list[FieldSpec]]:
    """Top-level property → its field and its multi-fields."""
    for k in mappings:
        if k not in ("dynamic", "properties"):
            not_implemented(f"mapping option [{k}]")
    if str(mappings.get("dynamic", "true")).lower() != "strict":
        not_implemented("dynamic mapping (only `dynamic: strict` is modelled)")

    def spec(path: str, d: dict[str, Any], sub: bool) -> FieldSpec:
        t = d.get("type")
        if t not in TYPES:
            not_implemented(f"field type [{t}] ([{path}])")
        extra = set(d) - _FIELD_OPTIONS.get(t, {"type"}) - ({"fields"} if sub else set())
        if extra or (sub and "fields" in d):
            not_implemented(
                f"mapping parameters {sorted(extra | ({'fields'} if sub and 'fields' in d else set()))} ([{path}])"
            )
        an = None
        if t == "text":
            name = d.get("analyzer", "standard")
            if name not in analyzers:
                raise EsError(
                    400, "mapper_parsing_exception", f"analyzer [{name}] has not been configured in mappings"
                )
            an = analyzers[name]
        return FieldSpec(path, t, an, d.get("ignore_above"))

    out: dict[str, list[FieldSpec]] = {}
    for name, d in mappings.get("properties", {}).items():
        specs = [spec(name, d, False)]
        for sub, sd in d.get("fields", {}).items():
            specs.append(spec(f"{name}.{sub}", sd, True))
        out[name] = specs
    return out


def _parse_error(msg: str) -> EsError:
    return EsError(400, "document_parsing_exception", msg)


def _date_millis(v: Any, path: str) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if isinstance(v, str):
        try:
            d = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if d.tzinfo is None:
                d = d.replace(tzinfo=UTC)
            return int(d.timestamp() * 1000)
    raise _parse_error(f"failed to parse field [{path}] of type [date] in document: [{v}]")


def _coerce(spec: FieldSpec, v: Any) -> Any:
    t = spec.type
    if t == "long":
        if isinstance(v, bool) or not isinstance(v, (int, str)):
            raise _parse_error(f"failed to parse field [{spec.path}] of type [long] in document: [{v}]")
        try:
            return int(v)
        except ValueError:
            raise _parse_error(
                f"failed to parse field [{spec.path}] of type [long] in document: [{v}]"
            ) from None
    if t == "boolean":
        if isinstance(v, bool):
            return v
        if v in ("true", "false", ""):
            return v == "true"
        raise _parse_error(f"failed to parse field [{spec.path}] of type [boolean] in document: [{v}]")
    if t == "date":
        return _date_millis(v, spec.path)
    if isinstance(v, (dict, list)):
        raise _parse_error(f"failed to parse field [{spec.path}] of type [{t}] in document")
    return v if isinstance(v, str) else json_scalar(v)


def json_scalar(v: Any) -> str:
    return "true" if v is True else "false" if v is False else str(v)


@dataclass
class Doc:
    id: str
    version: int
    seq_no: int
    source: dict[str, Any]
    terms: dict[str, list[str]]  # text field → its terms, one per position
    values: dict[str, Any]  # keyword/long/date/boolean field → its value


# --- the searchable view, built at refresh -----------------------------------------------------------------------
@dataclass
class FieldStats:
    postings: dict[str, dict[int, list[int]]] = field(default_factory=dict)  # term → doc → positions
    norms: dict[int, int] = field(default_factory=dict)  # doc → length byte
    doc_count: int = 0
    sum_ttf: int = 0
    _cache: list[float] | None = None

    def norm_inverse(self) -> list[float]:
        """Lucene's BM25Scorer cache: 1 / (k1 * ((1 - b) + b * length / avgdl)), in float."""
        if self._cache is None:
            avgdl = np.float32(self.sum_ttf / self.doc_count) if self.doc_count else np.float32(1)
            self._cache = [
                float(np.float32(1) / (K1 * ((np.float32(1) - B) + B * np.float32(LENGTH_TABLE[i]) / avgdl)))
                for i in range(256)
            ]
        return self._cache

    def idf(self, term: str) -> float:
        df = len(self.postings.get(term, ()))
        return f32(math.log(1 + (self.doc_count - df + 0.5) / (df + 0.5)))


@dataclass
class Snapshot:
    docs: list[Doc]
    fields: dict[str, FieldStats]


Scores = dict[int, float]  # doc ordinal in the snapshot → score


class Index:
    def __init__(self, name: str, settings: dict[str, Any], mappings: dict[str, Any]):
        self.name, self.uuid = name, uuid.uuid4().hex[:22]
        s = dict(settings)
        s.update(s.pop("index", {}))
        s = {k.removeprefix("index."): v for k, v in s.items()}
        self.max_result_window = int(s.pop("max_result_window", 10_000))
        if int(s.pop("number_of_shards", 1)) != 1:
            not_implemented("more than one shard (term statistics are per shard)")
        s.pop("number_of_replicas", None)  # a single node: replicas change nothing a search sees
        self.analyzers = build_analyzers(s.pop("analysis", {}))
        if s:
            not_implemented(f"index settings {sorted(s)}")
        self.properties = parse_mapping(mappings, self.analyzers)
        self.specs = {sp.path: sp for specs in self.properties.values() for sp in specs}
        self.docs: dict[str, Doc] = {}  # in Lucene's order: a rewritten document goes to the end
        self.seq_no = -1
        self.snapshot = Snapshot([], {})
        self.dirty = False

    # --- writes -----------------------------------------------------------------------------------------------
    def _analyse(self, source: dict[str, Any]) -> tuple[dict[str, list[str]], dict[str, Any]]:
        terms: dict[str, list[str]] = {}
        values: dict[str, Any] = {}
        for name, v in source.items():
            if name not in self.properties:
                raise EsError(
                    400,
                    "strict_dynamic_mapping_exception",
                    f"[1:2] mapping set to strict, dynamic introduction of [{name}] within [_doc] is not allowed",
                )
            if v is None:
                continue
            if isinstance(v, list):
                not_implemented(f"array values ([{name}])")
            for sp in self.properties[name]:
                if sp.type == "text":
                    if not isinstance(v, str):
                        v = json_scalar(v) if not isinstance(v, (dict, list)) else v
                    if not isinstance(v, str):
                        raise _parse_error(f"failed to parse field [{sp.path}] of type [text] in document")
                    assert sp.analyzer is not None
                    terms[sp.path] = sp.analyzer.terms(v)
                else:
                    cv = _coerce(sp, v)
                    if sp.ignore_above is not None and len(cv) > sp.ignore_above:
                        continue
                    values[sp.path] = cv
        return terms, values

    def write(
        self, doc_id: str, source: Any, version: int | None, version_type: str | None
    ) -> dict[str, Any]:
        """The index operation; returns the reply body (its `result` says created or updated)."""
        if not isinstance(source, dict):
            raise _parse_error("failed to parse: the document is not a JSON object")
        terms, values = self._analyse(source)
        cur = self.docs.get(doc_id)
        vt = version_type or "internal"
        if vt == "internal":
            if version is not None:
                raise EsError(
                    400,
                    "action_request_validation_exception",
                    "Validation Failed: 1: internal versioning can not be used for optimistic concurrency control. "
                    "Please use `if_seq_no` and `if_primary_term` instead;",
                )
            new_version = cur.version + 1 if cur else 1
        elif vt in ("external", "external_gte"):
            if version is None or version < 0:
                raise EsError(
                    400, "action_request_validation_exception", "Validation Failed: 1: version is missing;"
                )
            if cur is not None and (cur.version >= version if vt == "external" else cur.version > version):
                raise EsError(
                    409,
                    "version_conflict_engine_exception",
                    f"[{doc_id}]: version conflict, current version [{cur.version}] is higher"
                    f"{' or equal to' if vt == 'external' else ' than'} the one provided [{version}]",
                    index_uuid=self.uuid,
                    shard="0",
                    index=self.name,
                )
            new_version = version
        else:
            raise EsError(400, "illegal_argument_exception", f"No version type match [{vt}]")
        self.seq_no += 1
        if cur is not None:
            del self.docs[doc_id]
        self.docs[doc_id] = Doc(doc_id, new_version, self.seq_no, source, terms, values)
        self.dirty = True
        return {
            "_index": self.name,
            "_id": doc_id,
            "_version": new_version,
            "result": "updated" if cur else "created",
            "_shards": {"total": 2, "successful": 1, "failed": 0},
            "_seq_no": self.seq_no,
            "_primary_term": 1,
        }

    def refresh(self) -> None:
        if not self.dirty:
            return
        docs = list(self.docs.values())
        fields: dict[str, FieldStats] = {}
        for ord_, d in enumerate(docs):
            for path, terms in d.terms.items():
                if not terms:
                    continue
                fs = fields.setdefault(path, FieldStats())
                fs.doc_count += 1
                fs.sum_ttf += len(terms)
                fs.norms[ord_] = length_to_byte(len(terms))
                for pos, t in enumerate(terms):
                    fs.postings.setdefault(t, {}).setdefault(ord_, []).append(pos)
        self.snapshot = Snapshot(docs, fields)
        self.dirty = False

    # --- queries ----------------------------------------------------------------------------------------------
    def _spec(self, path: str) -> FieldSpec | None:
        return self.specs.get(path)

    def _bm25(self, fs: FieldStats, freqs: dict[int, int], idf: float, boost: float) -> Scores:
        weight = f32(boost * idf)
        cache = fs.norm_inverse()
        return {d: f32(weight - weight / (1.0 + f * cache[fs.norms[d]])) for d, f in freqs.items()}

    def _phrase(self, path: str, text: str, boost: float, scoring: bool) -> Scores:
        """match_phrase / a match on one term: the analysed query's terms at consecutive positions."""
        spec = self._spec(path)
        if spec is None:
            return {}
        if spec.type != "text":
            return self._term(path, text, boost, scoring)
        assert spec.analyzer is not None
        terms = spec.analyzer.terms(text)
        fs = self.snapshot.fields.get(path)
        if not terms or fs is None:
            return {}
        lists = [fs.postings.get(t, {}) for t in terms]
        candidates = set(lists[0])
        for pl in lists[1:]:
            candidates &= pl.keys()
        freqs: dict[int, int] = {}
        for d in candidates:
            starts = set(lists[0][d])
            for i, pl in enumerate(lists[1:], 1):
                starts &= {p - i for p in pl[d]}
            if starts:
                freqs[d] = len(starts)
        if not scoring:
            return dict.fromkeys(freqs, 0.0)
        idf = f32(
            sum(fs.idf(t) for t in terms)
        )  # a phrase's idf is the sum of its terms' (in double, then float)
        return self._bm25(fs, freqs, idf, boost)

    def _match(self, path: str, text: str, boost: float, scoring: bool) -> Scores:
        """A match query (operator or): one term query per analysed term, their scores summed."""
        spec = self._spec(path)
        if spec is None:
            return {}
        if spec.type != "text":
            return self._term(path, text, boost, scoring)
        assert spec.analyzer is not None
        fs = self.snapshot.fields.get(path)
        if fs is None:
            return {}
        total: dict[int, float] = {}
        for t in spec.analyzer.terms(text):
            freqs = {d: len(p) for d, p in fs.postings.get(t, {}).items()}
            for d, s in (
                self._bm25(fs, freqs, fs.idf(t), boost) if scoring else dict.fromkeys(freqs, 0.0)
            ).items():
                total[d] = total.get(d, 0.0) + s
        return {d: f32(s) for d, s in total.items()}

    def _term(self, path: str, value: Any, boost: float, scoring: bool) -> Scores:
        spec = self._spec(path)
        if spec is None:
            return {}
        if spec.type == "text":
            fs = self.snapshot.fields.get(path)
            if fs is None or not isinstance(value, str):
                return {}
            freqs = {d: len(p) for d, p in fs.postings.get(value, {}).items()}
            return self._bm25(fs, freqs, fs.idf(value), boost) if scoring else dict.fromkeys(freqs, 0.0)
        if scoring:
            not_implemented(f"a scoring term query on a [{spec.type}] field ([{path}]); put it in a filter")
        try:
            want = _coerce(spec, value)
        except EsError:
            raise EsError(
                400, "query_shard_exception", f"failed to create query: can not parse [{value}] for [{path}]"
            ) from None
        return {i: 0.0 for i, d in enumerate(self.snapshot.docs) if d.values.get(path) == want}

    def _range(self, path: str, spec_: dict[str, Any], scoring: bool) -> Scores:
        spec = self._spec(path)
        bounds = dict(spec_)
        boost = float(bounds.pop("boost", 1.0))
        ops = {
            "gte": lambda a, b: a >= b,
            "gt": lambda a, b: a > b,
            "lte": lambda a, b: a <= b,
            "lt": lambda a, b: a < b,
        }
        if set(bounds) - ops.keys():
            not_implemented(f"range options {sorted(set(bounds) - ops.keys())}")
        if spec is None:
            return {}
        if spec.type not in ("long", "date"):
            not_implemented(f"a range query on a [{spec.type}] field ([{path}])")
        conds = [(ops[k], _coerce(spec, v)) for k, v in bounds.items()]
        score = boost if scoring else 0.0  # a range query scores a constant
        return {
            i: score
            for i, d in enumerate(self.snapshot.docs)
            if path in d.values and all(op(d.values[path], v) for op, v in conds)
        }

    def _prefix(self, path: str, value: str, boost: float, scoring: bool) -> Scores:
        spec = self._spec(path)
        if spec is None:
            return {}
        if spec.type != "keyword":
            not_implemented(f"a prefix query on a [{spec.type}] field ([{path}])")
        score = boost if scoring else 0.0  # multi-term queries are rewritten to a constant score
        return {
            i: score
            for i, d in enumerate(self.snapshot.docs)
            if isinstance(d.values.get(path), str) and d.values[path].startswith(value)
        }

    def evaluate(self, q: Any, scoring: bool) -> Scores:
        """The documents a query matches, with their scores (0 where nothing is scored)."""
        if not isinstance(q, dict) or len(q) != 1:
            raise EsError(
                400, "parsing_exception", "query malformed, must start with start_object and have one key"
            )
        kind, body = next(iter(q.items()))
        if kind == "match_all":
            extra = set(body) - {"boost"}
            if extra:
                not_implemented(f"match_all options {sorted(extra)}")
            s = float(body.get("boost", 1.0)) if scoring else 0.0
            return dict.fromkeys(range(len(self.snapshot.docs)), s)
        if kind == "bool":
            return self._bool(body, scoring)
        if kind == "multi_match":
            return self._multi_match(body, scoring)
        if kind in ("match_phrase", "term", "prefix", "range"):
            if not isinstance(body, dict) or len(body) != 1:
                raise EsError(400, "parsing_exception", f"[{kind}] query doesn't support multiple fields")
            path, arg = next(iter(body.items()))
            if kind == "range":
                return self._range(path, arg, scoring)
            key = "query" if kind == "match_phrase" else "value"
            if not isinstance(arg, dict):
                arg = {key: arg}
            extra = set(arg) - {key, "boost"}
            if extra:
                not_implemented(f"{kind} options {sorted(extra)}")
            boost = float(arg.get("boost", 1.0))
            if kind == "match_phrase":
                return self._phrase(path, str(arg[key]), boost, scoring)
            if kind == "term":
                return self._term(path, arg[key], boost, scoring)
            return self._prefix(path, str(arg[key]), boost, scoring)
        if kind in KNOWN_QUERIES:
            not_implemented(f"the [{kind}] query")
        raise EsError(400, "parsing_exception", f"unknown query [{kind}]", root_type="parsing_exception")

    def _bool(self, body: dict[str, Any], scoring: bool) -> Scores:
        extra = set(body) - {"must", "should", "filter", "must_not", "minimum_should_match"}
        if extra:
            not_implemented(f"bool options {sorted(extra)}")

        def clauses(k: str) -> list[Any]:
            v = body.get(k, [])
            return v if isinstance(v, list) else [v]

        must, should, filt, must_not = (clauses(k) for k in ("must", "should", "filter", "must_not"))
        msm_raw = body.get("minimum_should_match", 0 if (must or filt) else 1)
        if not (isinstance(msm_raw, int) or (isinstance(msm_raw, str) and msm_raw.isdigit())):
            not_implemented(f"minimum_should_match [{msm_raw}]")
        msm = int(msm_raw) if should else 0
        result: dict[int, float] | None = None
        for c in must:
            r = self.evaluate(c, scoring)
            result = dict(r) if result is None else {d: result[d] + r[d] for d in result.keys() & r.keys()}
        for c in filt:
            r = self.evaluate(c, False)
            result = dict.fromkeys(r, 0.0) if result is None else {d: s for d, s in result.items() if d in r}
        if should:
            counts: dict[int, int] = {}
            sums: dict[int, float] = {}
            for c in should:
                for d, s in self.evaluate(c, scoring).items():
                    counts[d] = counts.get(d, 0) + 1
                    sums[d] = sums.get(d, 0.0) + s
            if result is None:
                result = {d: s for d, s in sums.items() if counts[d] >= msm}
            else:
                result = {d: s + sums.get(d, 0.0) for d, s in result.items() if counts.get(d, 0) >= msm}
        if result is None:  # only must_not (or nothing): everything
            result = dict.fromkeys(range(len(self.snapshot.docs)), 0.0)
        for c in must_not:
            excluded = self.evaluate(c, False)
            result = {d: s for d, s in result.items() if d not in excluded}
        # Lucene sums clause scores in double and returns a float
        return {d: f32(s) for d, s in result.items()} if scoring else dict.fromkeys(result, 0.0)

    def _multi_match(self, body: dict[str, Any], scoring: bool) -> Scores:
        extra = set(body) - {"query", "fields"}
        if extra:
            not_implemented(f"multi_match options {sorted(extra)} (only best_fields with tie_breaker 0)")
        best: dict[int, float] = {}
        for f in body.get("fields", []):
            path, _, boost = f.partition("^")
            if "*" in path:
                not_implemented("field wildcards in multi_match")
            for d, s in self._match(path, str(body["query"]), float(boost or 1.0), scoring).items():
                best[d] = max(best.get(d, 0.0), s)  # dis_max, tie_breaker 0
        return best

    # --- search -----------------------------------------------------------------------------------------------
    def _sort_spec(self, sort: Any) -> list[tuple[str, str]]:
        items = sort if isinstance(sort, list) else [sort]
        out: list[tuple[str, str]] = []
        for it in items:
            if isinstance(it, str):
                name, order = it, "desc" if it == "_score" else "asc"
            elif isinstance(it, dict) and len(it) == 1:
                name, o = next(iter(it.items()))
                if isinstance(o, dict):
                    if set(o) - {"order"}:
                        not_implemented(f"sort options {sorted(set(o) - {'order'})}")
                    o = o.get("order", "desc" if name == "_score" else "asc")
                order = o
            else:
                raise EsError(400, "parsing_exception", f"malformed sort [{it}]")
            if order not in ("asc", "desc"):
                raise EsError(400, "parsing_exception", f"Unknown SortOrder [{order}]")
            if name != "_score":
                spec = self._spec(name)
                if spec is None:
                    raise EsError(
                        400,
                        "search_phase_execution_exception",
                        f"No mapping found for [{name}] in order to sort on",
                        root_type="query_shard_exception",
                    )
                if spec.type == "text":
                    raise EsError(
                        400,
                        "search_phase_execution_exception",
                        f"Fielddata is disabled on [{name}] in [{self.name}]. Text fields are not optimised for "
                        "operations that require per-document field data like aggregations and sorting, so these "
                        "operations are disabled by default. Please use a keyword field instead.",
                        root_type="illegal_argument_exception",
                    )
            out.append((name, order))
        return out

    def _sort_value(self, name: str, ord_: int, scores: Scores) -> Any:
        if name == "_score":
            return scores[ord_]
        v = self.snapshot.docs[ord_].values.get(name)
        return int(v) if isinstance(v, bool) else v

    def search(self, body: dict[str, Any], source: bool | list[str]) -> dict[str, Any]:
        allowed = {
            "query",
            "sort",
            "from",
            "size",
            "track_total_hits",
            "aggs",
            "aggregations",
            "search_after",
        }
        extra = set(body) - allowed
        if extra:
            not_implemented(f"search body options {sorted(extra)}")
        frm, size = int(body.get("from", 0)), int(body.get("size", 10))
        if frm < 0 or size < 0:
            raise EsError(400, "illegal_argument_exception", "[from] and [size] must be non-negative")
        if frm + size > self.max_result_window:
            raise EsError(
                400,
                "search_phase_execution_exception",
                f"Result window is too large, from + size must be less than or equal to: [{self.max_result_window}] "
                f"but was [{frm + size}]. See the scroll api for a more efficient way to request large data sets. "
                "This limit can be set by changing the [index.max_result_window] index level parameter.",
                root_type="illegal_argument_exception",
            )
        spec = self._sort_spec(body["sort"]) if "sort" in body else None
        scoring = spec is None or any(n == "_score" for n, _ in spec)
        scores = self.evaluate(body.get("query", {"match_all": {}}), scoring)
        order_spec = spec or [("_score", "desc")]
        rows = [(d, [self._sort_value(n, d, scores) for n, _ in order_spec]) for d in sorted(scores)]
        for k in reversed(range(len(order_spec))):  # stable sorts, last key first; ties stay in index order
            if order_spec[k][1] == "asc":
                rows.sort(key=lambda r, k=k: (r[1][k] is None, 0 if r[1][k] is None else r[1][k]))
            else:
                rows.sort(
                    key=lambda r, k=k: (r[1][k] is not None, 0 if r[1][k] is None else r[1][k]), reverse=True
                )
        if "search_after" in body:
            after = body["search_after"]
            if spec is None:
                raise EsError(400, "illegal_argument_exception", "Sort must contain at least one field.")
            if not isinstance(after, list) or len(after) != len(spec):
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    f"search_after has {len(after) if isinstance(after, list) else 1} value(s) but sort has {len(spec)}.",
                )
            if frm:
                raise EsError(
                    400,
                    "illegal_argument_exception",
                    "`from` parameter must be set to 0 when `search_after` is used.",
                )
            rows = [r for r in rows if _after(r[1], after, spec)]
        total = len(scores)
        tth = body.get("track_total_hits", 10_000)
        total_obj: dict[str, Any] | None
        if tth is True:
            total_obj = {"value": total, "relation": "eq"}
        elif tth is False:
            total_obj = None
        else:
            limit = int(tth)
            total_obj = {"value": min(total, limit), "relation": "eq" if total <= limit else "gte"}
        hits = []
        for d, vals in rows[frm : frm + size]:
            doc = self.snapshot.docs[d]
            h: dict[str, Any] = {"_index": self.name, "_id": doc.id, "_score": scores[d] if scoring else None}
            if source is not False:
                h["_source"] = filter_source(doc.source, source)
            if spec is not None:
                h["sort"] = vals
            hits.append(h)
        hits_obj: dict[str, Any] = {
            "max_score": max(scores.values(), default=None) if scoring else None,
            "hits": hits,
        }
        if total_obj is not None:
            hits_obj = {"total": total_obj, **hits_obj}
        out: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": hits_obj,
        }
        aggs = body.get("aggs", body.get("aggregations"))
        if aggs:
            out["aggregations"] = {name: self._terms_agg(name, a, scores) for name, a in aggs.items()}
        return out

    def _terms_agg(self, name: str, agg: dict[str, Any], matched: Scores) -> dict[str, Any]:
        if set(agg) != {"terms"}:
            not_implemented(f"aggregation types {sorted(agg)} ([{name}])")
        opts = agg["terms"]
        extra = set(opts) - {"field", "size"}
        if extra:
            not_implemented(f"terms aggregation options {sorted(extra)}")
        spec = self._spec(opts.get("field", ""))
        if spec is None or spec.type != "keyword":
            not_implemented(f"a terms aggregation on [{opts.get('field')}] (only keyword fields)")
        counts: dict[str, int] = {}
        for d in matched:
            v = self.snapshot.docs[d].values.get(spec.path)
            if v is not None:
                counts[v] = counts.get(v, 0) + 1
        buckets = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        size = int(opts.get("size", 10))
        return {
            "doc_count_error_upper_bound": 0,
            "sum_other_doc_count": sum(c for _, c in buckets[size:]),
            "buckets": [{"key": k, "doc_count": c} for k, c in buckets[:size]],
        }

    def count(self, body: dict[str, Any]) -> int:
        extra = set(body) - {"query"}
        if extra:
            not_implemented(f"count body options {sorted(extra)}")
        return len(self.evaluate(body.get("query", {"match_all": {}}), False))


def _after(vals: list[Any], after: list[Any], spec: list[tuple[str, str]]) -> bool:
    """Whether a hit's sort values come strictly after `after` in the sort order."""
    for v, a, (_, order) in zip(vals, after, spec):
        if v == a:
            continue
        if v is None or a is None:
            return v is None  # missing values sort last
        return v > a if order == "asc" else v < a
    return False


def filter_source(source: dict[str, Any], includes: bool | list[str]) -> dict[str, Any]:
    if includes is True:
        return source
    assert isinstance(includes, list)
    return {k: v for k, v in source.items() if k in includes}


# query types Elasticsearch has that the fake refuses (any other name is ES's own "unknown query")
KNOWN_QUERIES = {
    "match",
    "match_phrase_prefix",
    "match_bool_prefix",
    "match_none",
    "query_string",
    "simple_query_string",
    "combined_fields",
    "terms",
    "terms_set",
    "exists",
    "ids",
    "fuzzy",
    "wildcard",
    "regexp",
    "dis_max",
    "constant_score",
    "boosting",
    "function_score",
    "script_score",
    "nested",
    "intervals",
    "more_like_this",
    "knn",
    "geo_distance",
}
