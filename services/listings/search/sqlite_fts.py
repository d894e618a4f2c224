"""The embedded search index: SQLite FTS5 in its own file (data/listings-search.db), WAL mode.

Columns of the FTS table (text pre-tokenised by `domain.text`, then split by FTS5's unicode61 on spaces):
`title` and `body` hold the positional streams (CJK bigrams, latin and digit runs) of the title and the
description, `words` jieba's words of the title, `title_uni` and `body_uni` single CJK characters. A query term of
two or more characters is the phrase of its stream tokens in `title`/`body` (OR its word in `words`, which only
changes the ranking); a one-character term matches the `*_uni` columns. Terms are AND. Ranking is FTS5's BM25
with column weights (title over description; a whole-word match adds to a bigram one).

Attributes for filters, sorting and facets live in `docs` (rowid = the FTS rowid) and, for queries, in columnar
arrays in memory (`attributes.py`), kept current from `docs.seq` (a change counter every write bumps): a query
is one MATCH that returns its hits' rowids (and BM25 ranks), then filters, facet counts and the page are vector
operations over those arrays — no per-hit lookup in `docs`, which cost as much as FTS5's own ranking. Only the
page's rows are read from `docs`.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ..domain import text
from .attributes import Attributes
from .hit_cache import HitCache
from .port import FACETS, ListingDoc, SearchHit, SearchQuery, SearchResult, region_prefix

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
    published_at REAL NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0  -- the change counter at its last write (readers reload what changed)
);
CREATE INDEX IF NOT EXISTS docs_seq ON docs (seq);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('seq', 0);
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


def _next_seq(c: sqlite3.Connection) -> int:
    return int(c.execute("UPDATE meta SET v = v + 1 WHERE k = 'seq' RETURNING v").fetchone()[0])


_ALL = "SELECT group_concat(rowid) FROM fts WHERE fts MATCH ?"
_RANKED = "SELECT rowid, rank FROM fts WHERE fts MATCH ?"
_NEWEST_RANKED = "SELECT rowid, rank FROM fts WHERE fts MATCH ? ORDER BY rowid DESC LIMIT ?"
_OLDER = "SELECT group_concat(rowid) FROM fts WHERE fts MATCH ? AND rowid < ?"


def _rowids(joined: str | None) -> np.ndarray:
    return np.fromstring(joined, dtype=np.int64, sep=",") if joined else np.zeros(0, dtype=np.int64)


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

    def __init__(self, path: str | Path, rank_window: int = 0, cache_entries: int = 256):
        self.path = str(path)
        self.rank_window = rank_window
        self.cache = HitCache(cache_entries)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._attrs = Attributes()
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
            _next_seq(c)  # other ranks: cached hits are stale

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
        row = c.execute(
            "SELECT rid, version, live FROM docs WHERE listing_id = ?", (doc.listing_id,)
        ).fetchone()
        if row is not None and row[1] >= doc.version:
            return 0
        attrs = (
            doc.version,
            doc.title,
            doc.category,
            doc.condition,
            doc.city_code,
            doc.price_fen,
            _ts(doc.published_at),
            _next_seq(c),
        )
        if row is None:
            cur = c.execute(
                "INSERT INTO docs (listing_id, version, live, title, category, condition, city_code, "
                "price_fen, published_at, seq) VALUES (?, ?, 1, ?, ?, ?, ?, ?, ?, ?)",
                (doc.listing_id, *attrs),
            )
            rid = cur.lastrowid
        else:
            rid, _, live = row
            if live:
                c.execute("DELETE FROM fts WHERE rowid = ?", (rid,))
            c.execute(
                "UPDATE docs SET version = ?, live = 1, title = ?, category = ?, condition = ?, city_code = ?, "
                "price_fen = ?, published_at = ?, seq = ? WHERE rid = ?",
                (*attrs, rid),
            )
        c.execute(
            "INSERT INTO fts (rowid, title, body, words, title_uni, body_uni) VALUES (?, ?, ?, ?, ?, ?)",
            (rid, *cols),
        )
        return 1

    def remove(self, listing_id: str, version: int) -> bool:
        c = self._conn()
        with self._write_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                row = c.execute(
                    "SELECT rid, version, live, seq FROM docs WHERE listing_id = ?", (listing_id,)
                ).fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO docs (listing_id, version, live) VALUES (?, ?, 0)", (listing_id, version)
                    )
                    changed = False
                elif row[1] >= version:
                    changed = False
                else:
                    seq = row[3]
                    if row[2]:  # the hits and BM25's statistics change: a new state of the index
                        c.execute("DELETE FROM fts WHERE rowid = ?", (row[0],))
                        seq = _next_seq(c)
                    c.execute(
                        "UPDATE docs SET version = ?, live = 0, seq = ? WHERE rid = ?", (version, seq, row[0])
                    )
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
        return None  # a committed write is visible to the next query (attributes reload by `seq`)

    def rebuild(
        self, docs: Iterable[ListingDoc], progress: Callable[[int], None] | None = None, batch: int = 2000
    ) -> int:
        """Empty the index and load `docs`. Searches see the old documents until the final commit (one
        transaction; WAL readers keep their snapshot), then the new ones."""
        c = self._conn()
        n = 0
        with self._write_lock:
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute("DELETE FROM fts")
                c.execute("DELETE FROM docs")
                _next_seq(c)  # even an empty rebuild is a new state (cached hits are of the old one)
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
    def _filters(self, q: SearchQuery, live: bool = True) -> tuple[str, list[Any]]:
        where: list[str] = ["d.live = 1"] if live else []
        args: list[Any] = []
        if q.category:
            if "." in q.category:
                where.append("d.category = ?")
                args.append(q.category)
            else:
                where.append("d.category >= ? AND d.category < ?")
                args += [q.category + ".", q.category + "/"]  # '/' sorts right after '.'
        if q.city_code:
            prefix = region_prefix(q.city_code)
            where.append("d.city_code >= ? AND d.city_code < ?")
            args += [prefix, prefix + ":"]  # ':' sorts right after '9'
        if q.condition:
            where.append("d.condition = ?")
            args.append(q.condition)
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
        ranked = q.sort == "relevance"
        c.execute("BEGIN")  # one snapshot for the attributes, the hits and the page
        try:
            seq = self._attrs.sync(c)
            attrs = self._attrs
            key = (expr, ranked)
            hits = self.cache.get(key, seq)
            if hits is None:
                hits = self._hits(c, expr, ranked)
                self.cache.put(key, seq, hits)
            rids, rank = hits
            if not rids.size:
                return SearchResult([], 0, {f: {} for f in FACETS})
            keep = attrs.mask(rids, q)
            if keep is not None:
                rids = rids[keep]
                rank = rank[keep] if rank is not None else None
            total = int(rids.size)
            facets = attrs.facets(rids)
            page = attrs.page(rids, rank, q.sort, q.offset, q.limit)
            out = [
                (int(rids[k]), float(rank[k]) if rank is not None and np.isfinite(rank[k]) else None)
                for k in page
            ]
            scored = None if rank is None else int(np.isfinite(rank).sum())
            return SearchResult(
                self._page(c, out, ranked), total, facets, scored if scored != total else None
            )
        finally:
            c.execute("COMMIT")

    def _hits(self, c: sqlite3.Connection, expr: str, ranked: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Every hit's rowid and, for a relevance sort, its BM25 rank (lower is better; inf: not
        scored), in one pass over the hits.

        FTS5 scores every hit it is asked to rank (about 1 µs each, most of it reading the row's size), which for
        a term in a fifth of a big corpus (手机) costs more than the rest of the query: past `rank_window` hits only
        the most recently indexed `rank_window` are scored, and the others rank after them (newest first). The
        rowids of the unscored rest come back as one string (`group_concat`): a Python tuple per row would cost
        three times what FTS5 spends finding them."""
        if not ranked:
            return _rowids(c.execute(_ALL, (expr,)).fetchone()[0]), None
        window = self.rank_window
        if window:
            scored = c.execute(_NEWEST_RANKED, (expr, window)).fetchall()[::-1]
        else:
            scored = c.execute(_RANKED, (expr,)).fetchall()
        head = np.fromiter((r[0] for r in scored), dtype=np.int64, count=len(scored))
        rank = np.fromiter((r[1] for r in scored), dtype=np.float64, count=len(scored))
        if not window or head.size < window:
            return head, rank
        rest = _rowids(c.execute(_OLDER, (expr, int(head[0]))).fetchone()[0])
        return np.concatenate((rest, head)), np.concatenate((np.full(rest.size, np.inf), rank))

    def _page(self, c: sqlite3.Connection, rows: list[tuple], with_rank: bool) -> list[SearchHit]:
        if not rows:
            return []
        rids = [r[0] for r in rows]
        info = {
            r[0]: r
            for r in c.execute(
                "SELECT rid, listing_id, title, category, condition, city_code, price_fen, published_at FROM docs "
                f"WHERE rid IN ({','.join('?' * len(rids))})",
                rids,
            )
        }
        out = []
        for rid, rank in rows:
            _, lid, title, cat, cond, city, price, pub = info[rid]
            out.append(
                SearchHit(
                    listing_id=lid,
                    title=title,
                    category=cat,
                    condition=cond,
                    city_code=city,
                    price_fen=int(price),
                    published_at=_dt(pub),
                    score=(-float(rank) if with_rank and rank is not None else None),
                )
            )
        return out

    def _browse(self, q: SearchQuery) -> SearchResult:
        c = self._conn()
        where, args = self._filters(q)
        total = int(c.execute(f"SELECT count(*) FROM docs d WHERE {where}", args).fetchone()[0])
        facets = {
            f: dict(
                c.execute(f"SELECT d.{f}, count(*) FROM docs d WHERE {where} GROUP BY d.{f}", args).fetchall()
            )
            for f in FACETS
        }
        order = {
            "relevance": "d.published_at DESC, d.rid",
            "newest": "d.published_at DESC, d.rid",
            "price_asc": "d.price_fen, d.published_at DESC, d.rid",
            "price_desc": "d.price_fen DESC, d.published_at DESC, d.rid",
        }[q.sort]
        rows = c.execute(
            f"SELECT d.rid, NULL FROM docs d WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?",
            [*args, q.limit, q.offset],
        ).fetchall()
        return SearchResult(self._page(c, rows, False), total, facets)
