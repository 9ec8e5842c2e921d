"""The search generation, and the SQL backend's request cache that it validates.

Like Elasticsearch's shard request cache: the expensive, cursor-free parts of a search (the
total and the facet counts), and its pages, are kept in memory, each under the **search
generation** read when it was computed. ``refresh_documents`` bumps the generation in the
same transaction as every real change to a search document (a new price, stock running out
or coming back, an offer paused or added, a product edited; not a stock decrement that leaves
the product in stock), so the change and the new generation commit, or roll back, together.

Every search reads the generation first (one small query) and serves a cached part only if it
was computed under that same generation. The application searches in one snapshot (SQLite's
read transaction; a REPEATABLE READ transaction on PostgreSQL), so the generation and what is
computed under it agree exactly. Reading it *first* keeps this safe even in a session whose
statements each see a newer snapshot (PostgreSQL's READ COMMITTED): a cached part then holds
data as new as, or newer than, its generation, and a search that sees a newer generation never
gets it. Nothing of this cache is shared between processes: each worker has its own, and every
hit is checked against the database (a query's full-text matches may also be shared through
Redis, under the text version: ``shared.py``).

The generation is spread over ``GENERATION_SLOTS`` rows. A transaction bumps one slot, picked
at random when it first changes a document and kept for the rest of that transaction, so
concurrent writers on PostgreSQL rarely wait on the same row lock, and no transaction ever
holds two of them (two writers could otherwise lock slots in opposite orders and deadlock).
The generation is the tuple of every slot's value. A bump adds a random step rather than 1,
so a generation never comes back after the table was emptied or a backup restored under a
running process.
"""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from sqlalchemy import and_, delete, insert, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ... import metrics
from ...db import utcnow
from .models import SearchChange, SearchGeneration

GENERATION_SLOTS = 16
MAX_STEP = 2**20  # 2^43 bumps of one slot before its BIGINT overflows
CHANGES_KEPT = timedelta(days=1)
PRUNE_CHANCE = 0.01  # of a bump pruning the old changes
_BUMPED = "search_generation_bumped"  # session.info: (root transaction, slot)
_random = random.SystemRandom()

Generation = tuple[tuple[int, int], ...]
T = TypeVar("T")


def choose_slot() -> int:
    return _random.randrange(GENERATION_SLOTS)


def bump_generation(
    session: Session, document_ids: Iterable[int] | None, text_changed: bool = True
) -> None:
    """Mark the search documents changed in this transaction (call after changing them), and
    record which: ``document_ids``, or None when any may have changed (a full rebuild); and
    whether the full-text index changed with them (``text_changed``: a document added or
    removed, or its text edited)."""
    root = session.get_transaction()
    mark = session.info.get(_BUMPED)
    if mark is not None and mark[0] is root:
        slot = mark[1]
    else:
        slot = choose_slot()
        session.info[_BUMPED] = (root, slot)
    table = SearchGeneration.__table__
    module = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    step = _random.randint(1, MAX_STEP)
    text = text_changed or document_ids is None
    # An upsert: a slot that has no row yet (a new or emptied table) starts at its first step.
    stmt = module.insert(table).values(slot=slot, value=step, text_value=step if text else 0)
    bumped = table.c.value + stmt.excluded.value
    value = session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.slot],
            set_={"value": bumped, "text_value": bumped} if text else {"value": bumped},
        ).returning(table.c.value)
    ).scalar_one()
    ids = None if document_ids is None else " ".join(map(str, sorted(set(document_ids))))
    session.execute(
        insert(SearchChange.__table__).values(
            slot=slot,
            value=value,
            previous=value - step,
            document_ids=ids,
            text_changed=text,
            created_at=utcnow(),
        )
    )
    if _random.random() < PRUNE_CHANCE:
        prune_changes(session)


def prune_changes(session: Session) -> None:
    """Forget bumps older than ``CHANGES_KEPT``: a process whose columns are older reloads."""
    session.execute(delete(SearchChange).where(SearchChange.created_at < utcnow() - CHANGES_KEPT))


@dataclass(frozen=True)
class Changes:
    """What changed between two generations: the documents, and whether any text did."""

    document_ids: set[int]
    text: bool


def changes_between(session: Session, held: Generation, seen: Generation) -> Changes | None:
    """What changed from generation ``held`` to ``seen`` (both read by ``read_generation``),
    or None when that cannot be told: a slot went back or vanished (the table was emptied or
    restored), a link of a slot's chain is pruned, or a bump may have changed any document."""
    before, after = dict(held), dict(seen)
    if not before.keys() <= after.keys():
        return None
    moved = {slot: (before.get(slot, 0), value) for slot, value in after.items()}
    moved = {slot: span for slot, span in moved.items() if span[0] != span[1]}
    if any(low > high for low, high in moved.values()):
        return None
    if not moved:
        return Changes(set(), text=False)
    table = SearchChange.__table__
    rows = session.execute(
        select(
            table.c.slot,
            table.c.value,
            table.c.previous,
            table.c.document_ids,
            table.c.text_changed,
        )
        .where(
            or_(
                *(
                    and_(table.c.slot == slot, table.c.value > low, table.c.value <= high)
                    for slot, (low, high) in moved.items()
                )
            )
        )
        .order_by(table.c.slot, table.c.value)
    ).all()
    reached = {slot: low for slot, (low, _high) in moved.items()}
    changed: set[int] = set()
    text = False
    for slot, value, previous, document_ids, text_changed in rows:
        if previous != reached[slot] or document_ids is None:
            return None
        reached[slot] = value
        changed.update(int(i) for i in document_ids.split())
        text = text or text_changed
    if any(reached[slot] != high for slot, (_low, high) in moved.items()):
        return None
    return Changes(changed, text)


def changed_documents(session: Session) -> bool:
    """True when this session's open transaction changed search documents: a search in it
    sees uncommitted data, which must neither come from nor go into the cache."""
    mark = session.info.get(_BUMPED)
    return mark is not None and mark[0] is session.get_transaction()


_GENERATION = select(SearchGeneration.slot, SearchGeneration.value).order_by(SearchGeneration.slot)


def read_generation(session: Session) -> Generation:
    return tuple((slot, value) for slot, value in session.execute(_GENERATION))


def read_text_version(session: Session) -> Generation | None:
    """The **text version**: every slot's value at its last text change. Two snapshots with
    the same text version see the same full-text index (the same matches and scores for any
    query), in any process; a bump that changes no text leaves it as it was (a slot whose
    bumps never changed text, ``text_value`` 0, is left out, as if it had no row).

    None when it cannot vouch for the text: no slot holds a text change (the table is new or
    was emptied, so an earlier empty version may have seen other text), or a slot's change
    log holds a text change above its text value (a bump by a release that did not keep text
    values yet, during a rolling deploy)."""
    g, c = SearchGeneration, SearchChange
    behind = select(c.slot).where(c.slot == g.slot, c.value > g.text_value, c.text_changed).exists()
    rows = session.execute(select(g.slot, g.text_value, behind).order_by(g.slot)).all()
    if any(stale for _slot, _value, stale in rows):
        return None
    return tuple((slot, value) for slot, value, _stale in rows if value != 0) or None


class SearchCache:
    """A bounded, thread-safe LRU of values filed under (key, generation): at most ``size``
    entries, and at most ``max_bytes`` in the arrays of values that have an ``nbytes``
    (the matches kept for a query); a larger value is not kept. ``size`` 0 turns it off:
    ``lookup`` then always computes."""

    def __init__(self, size: int, max_bytes: int | None = None):
        self.size = size
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Hashable, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.size > 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(
        self, part: str, key: Hashable, generation: Hashable | None, compute: Callable[[], T]
    ) -> T:
        """The value cached for ``key`` under ``generation``, else ``compute()`` (stored).
        ``generation`` None: not cacheable (the cache is off, or the search sees uncommitted
        changes), computed and not stored. Values are shared between threads: never mutate one."""
        if generation is None or not self.enabled:
            return compute()
        full_key = (part, key)
        with self._lock:
            entry = self._entries.get(full_key)
            if entry is not None and entry[0] == generation:
                self._entries.move_to_end(full_key)
                metrics.search_cache_lookup(part, hit=True)
                return entry[1]
        metrics.search_cache_lookup(part, hit=False)
        value = compute()
        weight = int(getattr(value, "nbytes", 0))
        with self._lock:
            old = self._entries.pop(full_key, None)  # of an older generation: it cannot hit
            if old is not None:
                self._bytes -= old[2]
            if self.max_bytes is not None and weight > self.max_bytes:
                return value  # larger than the whole budget: not kept
            self._entries[full_key] = (generation, value, weight)
            self._bytes += weight
            while len(self._entries) > self.size or (
                self.max_bytes is not None and self._bytes > self.max_bytes
            ):
                self._bytes -= self._entries.popitem(last=False)[1][2]
        return value
