"""How catalogue changes reach the search index.

The catalogue service calls ``product_changed(session, product_id)`` in the same transaction as
every change to a product or to one of its offers (create, update, pause, price change, stock).
It refreshes the product's row in ``search_documents`` there and then, so the SQL backend sees
the change the moment it commits. When ``SEARCH_BACKEND=elasticsearch`` it also writes a
``search_outbox`` row in that transaction: the change and its notice to Elasticsearch commit or
roll back together, and ``marketplace search sync`` (or the after-request hook) delivers it,
however long Elasticsearch was away.

A bulk load (the demo) can wrap its changes in ``documents_deferred(session)``: each product's
document is then refreshed once, with all the others, at the end of the block and still in
the same transaction.

The settings come from ``session.info["settings"]``, which the application's session factory
sets (``create_app``). A session made without it behaves as with the SQL backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .documents import refresh_documents
from .models import SearchOutbox

OUTBOX_PENDING = "search_outbox_pending"
DEFERRED = "search_documents_deferred"  # session.info: the products changed in the block
DEFERRED_BATCH = 500


@dataclass(frozen=True)
class Backlog:
    """Outbox rows not yet delivered to the search index."""

    pending: int
    oldest_created_at: datetime | None


def backlog(session: Session) -> Backlog:
    """How many changes wait for delivery, and since when (one query on the pending index)."""
    pending, oldest = session.execute(
        select(func.count(SearchOutbox.id), func.min(SearchOutbox.created_at)).where(
            SearchOutbox.processed_at.is_(None)
        )
    ).one()
    return Backlog(pending=int(pending), oldest_created_at=oldest)


def outbox_enabled(session: Session) -> bool:
    settings = session.info.get("settings")
    return settings is not None and settings.search_backend == "elasticsearch"


def product_changed(session: Session, product_id: str) -> None:
    """Record that a product's searchable data changed (call after the change, same transaction)."""
    session.flush()
    deferred = session.info.get(DEFERRED)
    if deferred is None:
        refresh_documents(session, [product_id])
    else:
        deferred[product_id] = None
    if outbox_enabled(session):
        session.add(SearchOutbox(product_id=product_id))
        session.flush()
        session.info[OUTBOX_PENDING] = True


@contextmanager
def documents_deferred(session: Session) -> Iterator[None]:
    """Within the block, ``product_changed`` only notes the product; at its end every noted
    product's document is refreshed, a batch at a time (a bulk load then costs one refresh
    per batch, not one per change). Nothing is refreshed when the block raises: the caller's
    transaction is rolled back. Searches in this session inside the block do not see the
    block's changes. Nested blocks join the outer one."""
    if DEFERRED in session.info:
        yield
        return
    noted: dict[str, None] = {}
    session.info[DEFERRED] = noted
    try:
        yield
    finally:
        del session.info[DEFERRED]
    ids = list(noted)
    for start in range(0, len(ids), DEFERRED_BATCH):
        refresh_documents(session, ids[start : start + DEFERRED_BATCH])
