"""The embedded index's cache of recent queries' hits: for a MATCH expression, every hit's rowid and the BM25 ranks
FTS5 gave, tied to the index's change counter (`meta.seq`) read in the same snapshot.

Filters, facets, the total and the page are computed from the hits on every query (vector operations, well under a
millisecond), so one entry serves every filter, sort and page of a query. Any write to the index (upsert, removal,
rebuild) moves the counter, and an entry of another counter is never used: a cached answer is the answer the index
would give now, BM25 statistics included. What it saves is FTS5's work for a query asked again before the next
write — for a broad term (手机: 38,000 hits of 200,000) that is nearly all of the query's cost.

Bounded by entries and by the rowids held (a rowid and a rank: 16 bytes), least recently used first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

Hits = tuple[np.ndarray, np.ndarray | None]  # rowids, ranks (None when not ranked)


class HitCache:
    def __init__(self, entries: int = 256, max_rows: int = 4_000_000):
        self.entries = entries
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._items: OrderedDict[tuple[str, bool], tuple[int, Hits]] = OrderedDict()
        self._rows = 0
        self.hits = self.misses = 0

    def get(self, key: tuple[str, bool], seq: int) -> Hits | None:
        if not self.entries:
            return None
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] != seq:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: tuple[str, bool], seq: int, hits: Hits) -> None:
        rows = int(hits[0].size)
        if not self.entries or rows > self.max_rows:
            return
        for a in hits:
            if a is not None:
                a.flags.writeable = False  # shared by every reader of the entry
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                if old[0] > seq:  # a newer answer is already there
                    self._items[key] = old
                    return
                self._rows -= int(old[1][0].size)
            self._items[key] = (seq, hits)
            self._rows += rows
            while len(self._items) > self.entries or self._rows > self.max_rows:
                _, (_, (rids, _)) = self._items.popitem(last=False)
                self._rows -= int(rids.size)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._rows = 0
