"""The indexer: follows listing events (consumer group `listings.indexer`) into the search index.

The index is not in listings' database, so its write and the inbox row are not one transaction: the index
applies a document only if its version is newer than the one it holds, so a redelivered or replayed event
(after a crash between the index write and the inbox commit) changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

from services.contracts.listings import ListingPublished, ListingUnpublished, ListingUpdated
from services.kernel.db import Database, UnitOfWork

from ..domain import model as m
from ..store import listings
from .port import ListingDoc, SearchIndex


def doc_of(ev: ListingPublished | ListingUpdated) -> ListingDoc:
    return ListingDoc(
        listing_id=ev.listing_id,
        version=ev.version,
        seller_id=ev.seller_id,
        title=ev.title,
        description=ev.description,
        category=ev.category,
        condition=ev.condition,
        price_fen=ev.price_fen,
        city_code=ev.city_code,
        published_at=ev.published_at,
    )


class Indexer:
    def __init__(self, index: SearchIndex):
        self.index = index

    def when_listing_published_index(self, event: ListingPublished, uow: UnitOfWork) -> None:
        self.index.upsert([doc_of(event)])

    def when_listing_updated_index(self, event: ListingUpdated, uow: UnitOfWork) -> None:
        self.index.upsert([doc_of(event)])

    def when_listing_unpublished_drop(self, event: ListingUnpublished, uow: UnitOfWork) -> None:
        self.index.remove(event.listing_id, event.version)


def published_docs(db: Database, batch: int = 5000) -> Iterator[ListingDoc]:
    """Every listing on sale, from the listings table (for a rebuild), in id order, a page at a time."""
    after = ""
    while True:
        with db.session(readonly=True) as s:
            rows = s.execute(
                select(
                    listings.c.id,
                    listings.c.version,
                    listings.c.seller_id,
                    listings.c.title,
                    listings.c.description,
                    listings.c.category,
                    listings.c.condition,
                    listings.c.price_fen,
                    listings.c.city_code,
                    listings.c.published_at,
                )
                .where(listings.c.status == m.PUBLISHED, listings.c.id > after)
                .order_by(listings.c.id)
                .limit(batch)
            ).all()
        if not rows:
            return
        for r in rows:
            yield ListingDoc(
                listing_id=r.id,
                version=r.version,
                seller_id=r.seller_id,
                title=r.title,
                description=r.description,
                category=r.category,
                condition=r.condition,
                price_fen=int(r.price_fen),
                city_code=r.city_code,
                published_at=_aware(r.published_at),
            )
        after = rows[-1].id


def count_published(db: Database) -> int:
    from sqlalchemy import func

    with db.session(readonly=True) as s:
        return int(
            s.execute(
                select(func.count()).select_from(listings).where(listings.c.status == m.PUBLISHED)
            ).scalar()
            or 0
        )


def reindex(db: Database, index: SearchIndex, progress: Callable[[int], None] | None = None) -> int:
    """Rebuild the index from the listings table, then catch up with listings that changed while it was built
    (their events may have gone to the index being replaced); versions make the catch-up safe to repeat."""
    from datetime import UTC, datetime, timedelta

    started = datetime.now(UTC) - timedelta(seconds=5)  # clock slack between writers
    n = index.rebuild(published_docs(db), progress)
    catch_up(db, index, started)
    return n


def catch_up(db: Database, index: SearchIndex, since: Any) -> int:
    """Apply the current state of every listing changed since `since` (on sale → upsert, else → remove)."""
    with db.session(readonly=True) as s:
        rows = s.execute(
            select(
                listings.c.id,
                listings.c.version,
                listings.c.status,
                listings.c.seller_id,
                listings.c.title,
                listings.c.description,
                listings.c.category,
                listings.c.condition,
                listings.c.price_fen,
                listings.c.city_code,
                listings.c.published_at,
            ).where(listings.c.updated_at >= since)
        ).all()
    live = [
        ListingDoc(
            listing_id=r.id,
            version=r.version,
            seller_id=r.seller_id,
            title=r.title,
            description=r.description,
            category=r.category,
            condition=r.condition,
            price_fen=int(r.price_fen),
            city_code=r.city_code,
            published_at=_aware(r.published_at),
        )
        for r in rows
        if r.status == m.PUBLISHED
    ]
    changed = index.upsert(live)
    for r in rows:
        if r.status != m.PUBLISHED:
            changed += int(index.remove(r.id, r.version))
    return changed


def _aware(dt: Any) -> Any:
    from datetime import UTC

    return dt if dt is None or dt.tzinfo else dt.replace(tzinfo=UTC)
