"""Columnar copies of the indexed listings' attributes, by FTS rowid, for filtering, facets and sorting the hits of
a query without a lookup per hit.

The arrays follow the `docs` table through its change counter: each write gives the row the next `meta.seq`; a
reader compares the counter with what it loaded and reads only the rows changed since (another process — the
indexer in the background process — may have written them). Rows of listings taken off the index keep stale
attributes here, which is harmless: only rowids the FTS table returns are ever looked up.
"""

from __future__ import annotations

import sqlite3
import threading

import numpy as np

from .port import FACETS, SearchQuery, region_prefix

_FIELDS = ("category", "condition", "city_code")


class Attributes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seq = -1
        self.size = 0
        self.codes: dict[str, dict[str, int]] = {f: {} for f in _FIELDS}
        self.names: dict[str, list[str]] = {f: [] for f in _FIELDS}
        self.cols: dict[str, np.ndarray] = {f: np.zeros(0, dtype=np.int32) for f in _FIELDS}
        self.price = np.zeros(0, dtype=np.int64)
        self.published = np.zeros(0, dtype=np.float64)

    # --- loading -------------------------------------------------------------------------------------------
    def sync(self, c: sqlite3.Connection) -> int:
        """Load what changed; returns the change counter of the connection's snapshot (not `self.seq`, which
        another thread may move on meanwhile)."""
        seq = int(c.execute("SELECT v FROM meta WHERE k = 'seq'").fetchone()[0])
        if seq == self.seq:
            return seq
        with self._lock:
            if seq != self.seq:
                rows = c.execute(
                    "SELECT rid, category, condition, city_code, price_fen, published_at, seq FROM docs "
                    "WHERE seq > ? AND live = 1",
                    (max(self.seq, 0) if self.seq >= 0 else -1,),
                ).fetchall()
                self._apply(rows)
                self.seq = max([seq] + [r[6] for r in rows])
        return seq

    def _code(self, field: str, value: str) -> int:
        codes = self.codes[field]
        code = codes.get(value)
        if code is None:
            code = codes[value] = len(self.names[field])
            self.names[field].append(value)
        return code

    def _apply(self, rows: list[tuple]) -> None:
        if not rows:
            return
        top = max(r[0] for r in rows) + 1
        if top > self.size:
            grow = max(top, int(self.size * 1.5) + 1024)
            for f in _FIELDS:
                self.cols[f] = np.resize(self.cols[f], grow)
            self.price = np.resize(self.price, grow)
            self.published = np.resize(self.published, grow)
            self.size = grow
        rids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        for k, f in enumerate(_FIELDS, start=1):
            self.cols[f][rids] = np.fromiter(
                (self._code(f, r[k]) for r in rows), dtype=np.int32, count=len(rows)
            )
        self.price[rids] = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
        self.published[rids] = np.fromiter((r[5] for r in rows), dtype=np.float64, count=len(rows))

    # --- queries -------------------------------------------------------------------------------------------
    def mask(self, rids: np.ndarray, q: SearchQuery) -> np.ndarray | None:
        """Which hits pass the query's filters (None: no filter)."""
        keep: np.ndarray | None = None

        def both(m: np.ndarray) -> None:
            nonlocal keep
            keep = m if keep is None else keep & m

        if q.category:
            cats = self.cols["category"][rids]
            if "." in q.category:
                both(cats == self.codes["category"].get(q.category, -1))
            else:
                wanted = [
                    c for name, c in self.codes["category"].items() if name.startswith(q.category + ".")
                ]
                both(np.isin(cats, wanted))
        if q.city_code:
            prefix = region_prefix(q.city_code)
            both(
                np.isin(
                    self.cols["city_code"][rids],
                    [c for n, c in self.codes["city_code"].items() if n.startswith(prefix)],
                )
            )
        if q.condition:
            both(self.cols["condition"][rids] == self.codes["condition"].get(q.condition, -1))
        if q.min_price_fen is not None:
            both(self.price[rids] >= q.min_price_fen)
        if q.max_price_fen is not None:
            both(self.price[rids] <= q.max_price_fen)
        return keep

    def facets(self, rids: np.ndarray) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for f in FACETS:
            counts = np.bincount(self.cols[f][rids], minlength=len(self.names[f]))
            order = np.argsort(-counts, kind="stable")
            out[f] = {self.names[f][i]: int(counts[i]) for i in order if counts[i]}
        return out

    def page(
        self, rids: np.ndarray, rank: np.ndarray | None, sort: str, offset: int, limit: int
    ) -> list[int]:
        """Positions (into `rids`) of the requested page, in order."""
        n = offset + limit
        if rids.size == 0 or offset >= rids.size:
            return []
        pub = self.published[rids]
        if sort == "relevance" and rank is not None:
            keys = (rids, -pub, rank)  # np.lexsort: last key first
        elif sort == "price_asc":
            keys = (rids, -pub, self.price[rids])
        elif sort == "price_desc":
            keys = (rids, -pub, -self.price[rids])
        else:  # newest
            keys = (rids, -pub)
        if rids.size > 4 * n:
            # narrow to the candidates of the first key before the full ordering
            first = keys[-1]
            cut = np.partition(first, n - 1)[n - 1]
            cand = np.nonzero(first <= cut)[0]
            order = cand[np.lexsort(tuple(k[cand] for k in keys))]
        else:
            order = np.lexsort(keys)
        return [int(i) for i in order[offset:n]]
