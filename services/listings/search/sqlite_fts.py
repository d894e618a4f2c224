"""The embedded search index: SQLite FTS5 in its own file (data/listings-search.db), WAL mode.

Columns of the FTS table (text pre-tokenised by `domain.text`, then split by FTS5's unicode61 on spaces):
`title` and `body` hold the positional streams (CJK bigrams, latin and digit runs) of the title and the
description, `words` jieba's words of the title, `title_uni` and `body_uni` single CJK characters. A query term of
two or more characters is the phrase of its stream tokens in `title`/`body` (OR its word in `words`, which only
changes the ranking); a one-character term matches the `*_uni` columns. Terms are AND. Ranking is FTS5's BM25
with column weights (title over description; a whole-word match adds to a bigram one).

Attributes for filters, sorting and facets live in `docs` (rowid = the FTS rowid). A query reads the attributes of
all its hits in one pass (one MATCH evaluation), counts the facets and takes the page in Python.
"""
from __future__ import annotations

import heapq
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..domain import text
from .port import FACETS, ListingDoc, SearchHit, SearchQuery, SearchResult

# bm25 weights of: title, body, words, title_uni, body_uni
BM25_WEIGHTS = (4.0, 1.0, 3.0, 2.0, 0.5)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    rid INTEGER PRIMARY KEY,
    listing_id TEXT NOT NULL UNIQUE,
    version INTEGER NOT NULL,
    live INTEGER NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    category TEXT NOT NULL DEFAULT '',
    condition TEXT NOT NULL DEFAULT '',
    city_code TEXT NOT NULL DEFAULT '',
    price_fen INTEGER NOT NULL DEFAULT 0,
    published_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS docs_live_published ON docs (live, published_at);
CREATE INDEX IF NOT EXISTS docs_live_price ON docs (live, price_fen);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (title, body, words, title_uni, body_uni, tokenize = 'unicode61');
"""


def _ts(dt: datetime) -> float:
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _fts_values(doc: ListingDoc) -> tuple[str, str, str, str, str]:
    t, b = text.analyse(doc.title), text.analyse(doc.description, with_words=False)
    return t.stream, b.stream, t.words, t.unigrams, b.unigrams


def match_expression(q: str) -> str | None:
    """The FTS5 MATCH expression of a query (None when it has no searchable term)."""
    parts = []
    for term in text.parse_query(q):
        if term.single_char is not None:
            parts.append(f'{{title_uni body_uni}} : "{term.single_char}"')
            continue
        phrase = '{title body} : "' + " ".join(term.phrase) + '"'
        if term.is_word:
            phrase = f'({phrase} OR words : "{"".join(text.runs(term.text))}")'
        parts.append(phrase)
    return " AND ".join(parts) if parts else None


class SqliteSearchIndex:
    name = "sqlite"

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        c = self._conn()
        with self._write_lock:
            c.executescript(_SCHEMA)
            self._configure_rank(c)

    # --- connections ---------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is None:
            c = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA cache_size=-65536")
            c.execute("PRAGMA temp_store=MEMORY")
            self._local.conn = c
            with self._conns_lock:
                self._conns.append(c)
        return c

    def _configure_rank(self, c: sqlite3.Connection) -> None:
        rank = "bm25(" + ", ".join(str(w) for w in BM25_WEIGHTS) + ")"
        # only when it differs: a config write makes other open connections reload the table's structure
        row = c.execute("SELECT v FROM fts_config WHERE k = 'rank'").fetchone()
        if row is None or row[0] != rank:
            c.execute("INSERT INTO fts(fts, rank) VALUES ('rank', ?)", (rank,))

    def close(self) -> None:
        with self._conns_lock:
            for c in self._conns:
                try:
                    c.close()
                except sqlite3.ProgrammingError:
                    pass
            self._conns.clear()
        self._local = threading.local()

    # --- writes --------------------------------------------------------------------------------------------
    def upsert(self, docs: list[ListingDoc]) -> int:
        if not docs:
            return 0
        prepared = [(d, _fts_values(d)) for d in docs]  # tokenising (jieba) outside the write lock
        c = self._conn()
        changed = 0
        with self._write_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                for doc, cols in prepared:
                    changed += self._upsert_one(c, doc, cols)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return changed

    def _upsert_one(self, c: sqlite3.Connection, doc: ListingDoc, cols: tuple[str, ...]) -> int:
        row = c.execute("SELECT rid, version, live FROM docs WHERE listing_id = ?", (doc.listing_id,)).fetchone()
        attrs = (doc.version, doc.title, doc.category, doc.condition, doc.city_code, doc.price_fen,
                 _ts(doc.published_at))
        if row is None:
            cur = c.execute("INSERT INTO docs (listing_id, version, live, title, category, condition, city_code, "
                            "price_fen, published_at) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?)", (doc.listing_id, *attrs))
            rid = cur.lastrowid
        else:
            rid, version, live = row
            if version >= doc.version:
                return 0
            if live:
                c.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
            c.execute("UPDATE docs SET version = ?, live = 1, title = ?, category = ?, condition = ?, city_code = ?, "
                      "price_fen = ?, published_at = ? WHERE rid = ?", (*attrs, rid))
        c.execute("INSERT INTO fts (rowid, title, body, words, title_uni, body_uni) VALUES (?, ?, ?, ?, ?, ?)",
                  (rid, *cols))
        return 1

    def remove(self, listing_id: str, version: int) -> bool:
        c = self._conn()
        with self._write_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute("SELECT rid, version, live FROM docs WHERE listing_id = ?", (listing_id,)).fetchone()
                if row is None:
                    c.execute("INSERT INTO docs (listing_id, version, live) VALUES (?, ?, 0)", (listing_id, version))
                    changed = False
                elif row[1] >= version:
                    changed = False
                else:
                    if row[2]:
                        c.execute("DELETE FROM fts WHERE rowid = ?", (row[0],))
                    c.execute("UPDATE docs SET version = ?, live = 0 WHERE rid = ?", (version, row[0]))
                    changed = bool(row[2])
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return changed

    def version_of(self, listing_id: str) -> int | None:
        row = self._conn().execute("SELECT version FROM docs WHERE listing_id = ?", (listing_id,)).fetchone()
        return None if row is None else int(row[0])

    def count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM docs WHERE live = 1").fetchone()[0])

    def refresh(self) -> None:
        return None

    def rebuild(self, docs: Iterable[ListingDoc], progress: Callable[[int], None] | None = None,
                batch: int = 2000) -> int:
        """Empty the index and load `docs`. Searches see the old documents until the final commit (one
        transaction; WAL readers keep their snapshot), then the new ones."""
        c = self._conn()
        n = 0
        with self._write_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("DELETE FROM fts")
                c.execute("DELETE FROM docs")
                chunk: list[ListingDoc] = []
                for doc in docs:
                    chunk.append(doc)
                    if len(chunk) >= batch:
                        n += self._load(c, chunk)
                        if progress:
                            progress(len(chunk))
                        chunk = []
                if chunk:
                    n += self._load(c, chunk)
                    if progress:
                        progress(len(chunk))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        c.execute("INSERT INTO fts(fts) VALUES ('optimize')")
        return n

    def _load(self, c: sqlite3.Connection, docs: list[ListingDoc]) -> int:
        for doc in docs:
            self._upsert_one(c, doc, _fts_values(doc))
        return len(docs)

    # --- reads ---------------------------------------------------------------------------------------------
    def _filters(self, q: SearchQuery) -> tuple[str, list[Any]]:
        where, args = ["d.live = 1"], []
        if q.category:
            if "." in q.category:
                where.append("d.category = ?")
                args.append(q.category)
            else:
                where.append("d.category >= ? AND d.category < ?")
                args += [q.category + ".", q.category + "/"]  # '/' sorts right after '.'
        for col in ("city_code", "condition"):
            v = getattr(q, col)
            if v:
                where.append(f"d.{col} = ?")
                args.append(v)
        if q.min_price_fen is not None:
            where.append("d.price_fen >= ?")
            args.append(q.min_price_fen)
        if q.max_price_fen is not None:
            where.append("d.price_fen <= ?")
            args.append(q.max_price_fen)
        return " AND ".join(where), args

    def search(self, q: SearchQuery) -> SearchResult:
        expr = match_expression(q.q) if q.q.strip() else None
        if q.q.strip() and expr is None:
            return SearchResult([], 0, {f: {} for f in FACETS})
        if expr is None:
            return self._browse(q)
        c = self._conn()
        where, args = self._filters(q)
        with_rank = q.sort == "relevance"
        # CROSS JOIN keeps the FTS table outermost: otherwise the planner may scan `docs` and evaluate the MATCH
        # once per row (about 200 times slower at 10,000 listings)
        rows = c.execute(
            f"SELECT d.rid, {'fts.rank' if with_rank else '0'}, d.category, d.condition, d.city_code, d.price_fen, "
            f"d.published_at FROM fts CROSS JOIN docs d ON d.rid = fts.rowid WHERE fts MATCH ? AND {where}",
            [expr, *args]).fetchall()
        facets = {f: Counter() for f in FACETS}
        for r in rows:
            facets["category"][r[2]] += 1
            facets["condition"][r[3]] += 1
            facets["city_code"][r[4]] += 1
        keys: dict[str, Callable[[tuple], Any]] = {
            "relevance": lambda r: (r[1], -r[6], r[0]),
            "price_asc": lambda r: (r[5], -r[6], r[0]),
            "price_desc": lambda r: (-r[5], -r[6], r[0]),
            "newest": lambda r: (-r[6], r[0]),
        }
        page = heapq.nsmallest(q.offset + q.limit, rows, key=keys[q.sort])[q.offset:]
        return SearchResult(self._hits(c, page, with_rank), len(rows), _plain(facets))

    def _hits(self, c: sqlite3.Connection, page: list[tuple], with_rank: bool) -> list[SearchHit]:
        if not page:
            return []
        rids = [r[0] for r in page]
        info = {r[0]: r[1:] for r in c.execute(
            f"SELECT rid, listing_id, title FROM docs WHERE rid IN ({','.join('?' * len(rids))})", rids)}
        return [SearchHit(listing_id=info[r[0]][0], title=info[r[0]][1], category=r[2], condition=r[3],
                          city_code=r[4], price_fen=int(r[5]), published_at=_dt(r[6]),
                          score=(-float(r[1]) if with_rank else None)) for r in page]

    def _browse(self, q: SearchQuery) -> SearchResult:
        c = self._conn()
        where, args = self._filters(q)
        total = int(c.execute(f"SELECT count(*) FROM docs d WHERE {where}", args).fetchone()[0])
        facets = {f: dict(c.execute(f"SELECT d.{f}, count(*) FROM docs d WHERE {where} GROUP BY d.{f}", args)
                          .fetchall()) for f in FACETS}
        order = {"relevance": "d.published_at DESC, d.rid", "newest": "d.published_at DESC, d.rid",
                 "price_asc": "d.price_fen, d.published_at DESC, d.rid",
                 "price_desc": "d.price_fen DESC, d.published_at DESC, d.rid"}[q.sort]
        rows = c.execute(f"SELECT d.rid, 0, d.category, d.condition, d.city_code, d.price_fen, d.published_at "
                         f"FROM docs d WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
                         [*args, q.limit, q.offset]).fetchall()
        return SearchResult(self._hits(c, rows, False), total, facets)


def _plain(facets: dict[str, Counter]) -> dict[str, dict[str, int]]:
    return {k: dict(v.most_common()) for k, v in facets.items()}
