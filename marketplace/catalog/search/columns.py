"""The search documents' filter, facet and sort columns in memory, as arrays, per process.

Counting facets over tens of thousands of matches row by row in the database was most of a
broad search's cost (one B-tree seek per match). Here each process holds every document's
category, kind, price, stock, PHB flag, sort keys and suppliers as ``numpy`` arrays, and a
search gets its matches' ids from the full-text index alone and counts, filters and orders
them with a few vectorised operations.

A ``Columns`` is an immutable snapshot at one search generation. ``ColumnStore`` keeps the
last few and brings one forward to a newer generation by re-reading only the documents changed
in between (``cache.changes_between``), or loads them all when that cannot be told. A search
uses the snapshot of the generation it read, in the same database snapshot as the rest of the
search, so the columns always describe exactly the documents its full-text query sees.

Each snapshot also carries a **text epoch**, a number of this process's that stays the same
from one snapshot to the next while the full-text index answers as before (the same documents,
none of their text edited: a price or stock change). The matches and relevance scores that a
search found for a query are kept under it (``sql.py``), as positions into these arrays.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Integer,
    String,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    not_,
    select,
    type_coerce,
)
from sqlalchemy.orm import Session

from ..models import CategoryKind
from .base import price_bucket_bounds
from .cache import Changes, Generation, changes_between
from .models import SearchDocument, SearchDocumentSupplier
from .scoring import TermIndex

D = SearchDocument.__table__
S = SearchDocumentSupplier.__table__
KINDS: tuple[str, ...] = tuple(k.value for k in CategoryKind)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The arrays of ``Columns`` with one element per document, besides ``ids``.
PER_DOCUMENT = ("category", "kind", "price", "bucket", "in_stock", "phb", "tie_break", "created")
# A threaded worker's concurrent searches may read a generation behind the newest. Each
# snapshot is about 80 bytes a document (with three suppliers each).
SNAPSHOTS_KEPT = 2
# Reloading is cheaper than patching when more than this share of the documents changed (and
# more than ``PATCH_ALWAYS`` of them).
PATCH_LIMIT = 0.2
PATCH_ALWAYS = 1000
ID_BATCH = 500
# Up to this many changed documents are read as rows, in one statement (``_read_few``).
FEW_DOCUMENTS = 50
_text_epochs = itertools.count(1)


def micros(moment: datetime) -> int:
    """A timezone-aware time as integer microseconds since the epoch (exact)."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


@dataclass(frozen=True, eq=False)
class Filters:
    """A search's filters as masks over the documents, by facet ("" for those that every facet
    applies): the facet of a filter counts without it, as shoppers expect."""

    by_facet: dict[str, np.ndarray]

    def all_but(self, facet: str | None, base: np.ndarray) -> np.ndarray:
        mask = base
        for name, condition in self.by_facet.items():
            if name != facet:
                mask = mask & condition
        return mask


@dataclass(frozen=True, eq=False)
class Columns:
    """Every search document at one generation, one array element per document, by id."""

    generation: Generation | None
    text_epoch: int  # the same while the full-text index and ``ids`` are (see above)
    ids: np.ndarray  # int64, ascending
    category: np.ndarray  # int32 index into ``categories``
    kind: np.ndarray  # int8 index into ``KINDS``
    price: np.ndarray  # int64 min unit price, nanopence
    bucket: np.ndarray  # int8 index into the price buckets
    in_stock: np.ndarray  # bool
    phb: np.ndarray  # bool: eligible and not excluded
    tie_break: np.ndarray  # int64
    created: np.ndarray  # int64 microseconds since the epoch
    pair_document: np.ndarray  # int64 position of a (document, supplier) pair's document
    pair_supplier: np.ndarray  # int32 index into ``suppliers``
    categories: tuple[str, ...]
    suppliers: tuple[str, ...]
    # The full-text index's lengths and postings for scoring, of this text epoch (scoring.py).
    terms: TermIndex = field(default_factory=TermIndex)

    def __len__(self) -> int:
        return len(self.ids)

    # -- building

    @classmethod
    def load(cls, session: Session, generation: Generation | None) -> Columns:
        """Every document, read now."""
        return cls._build(generation, _read(session, None), (), ())

    def patched(self, session: Session, generation: Generation, changes: Changes) -> Columns:
        """These columns with the changed documents read again (gone ones dropped)."""
        changed = changes.document_ids
        changed_ids = np.fromiter(changed, dtype=np.int64, count=len(changed))
        parts = [
            _read(session, changed_ids[start : start + ID_BATCH].tolist())
            for start in range(0, len(changed_ids), ID_BATCH)
        ]
        fresh = Columns._build(generation, _joined(parts), self.categories, self.suppliers)
        held = self.positions(changed_ids)
        if len(fresh) == len(changed_ids) == int(held.sum()):
            patched = self._replaced(generation, held, np.searchsorted(self.ids, fresh.ids), fresh)
            if not changes.text:
                return patched
            return replace(
                patched, text_epoch=fresh.text_epoch, terms=self.terms.after(changed_ids)
            )
        return self._merged(generation, ~held, fresh, changed_ids)

    def _replaced(
        self, generation: Generation, held: np.ndarray, at: np.ndarray, fresh: Columns
    ) -> Columns:
        """These columns with the documents at positions ``at`` (the mask ``held``) replaced by
        ``fresh``'s, which has the same ids: the common case of a change, which moves nothing.
        (Every step is linear or a binary search: ``np.isin`` would sort the large arrays.)"""

        def replaced(name: str) -> np.ndarray:
            values, new = getattr(self, name), getattr(fresh, name)
            if np.array_equal(values[at], new):  # a price change leaves most columns as they are
                return values
            values = values.copy()
            values[at] = new
            return values

        old_pairs = held[self.pair_document]
        new_document, new_supplier = at[fresh.pair_document], fresh.pair_supplier
        if _same_pairs(
            (self.pair_document[old_pairs], self.pair_supplier[old_pairs]),
            (new_document, new_supplier),
        ):
            pair_document, pair_supplier = self.pair_document, self.pair_supplier
        else:
            kept = ~old_pairs
            pair_document = np.concatenate([self.pair_document[kept], new_document])
            pair_supplier = np.concatenate([self.pair_supplier[kept], new_supplier])
        return replace(
            self,
            generation=generation,
            **{name: replaced(name) for name in PER_DOCUMENT},
            pair_document=pair_document,
            pair_supplier=pair_supplier,
            categories=fresh.categories,
            suppliers=fresh.suppliers,
        )

    @classmethod
    def _build(
        cls,
        generation: Generation | None,
        read: _Read,
        categories: Sequence[str],
        suppliers: Sequence[str],
    ) -> Columns:
        order = np.argsort(read.ids, kind="stable")
        ids = read.ids[order]
        category_index = {c: i for i, c in enumerate(categories)}
        supplier_index = {s: i for i, s in enumerate(suppliers)}
        category = _coded(ids, read.categories, category_index, np.int32)
        kind = _coded(ids, read.kinds, {k: i for i, k in enumerate(KINDS)}, np.int8)
        pair_document = np.concatenate(
            [np.empty(0, dtype=np.int64), *(members for _name, members in read.suppliers)]
        )
        pair_supplier = np.concatenate(
            [
                np.empty(0, dtype=np.int32),
                *(
                    np.full(
                        len(members),
                        supplier_index.setdefault(name, len(supplier_index)),
                        dtype=np.int32,
                    )
                    for name, members in read.suppliers
                ),
            ]
        )
        price = read.price[order]
        return cls(
            generation=generation,
            text_epoch=next(_text_epochs),
            ids=ids,
            category=category,
            kind=kind,
            price=price,
            bucket=_buckets(price),
            in_stock=read.in_stock[order],
            phb=read.phb[order],
            tie_break=read.tie_break[order],
            created=read.created[order],
            pair_document=np.searchsorted(ids, pair_document),
            pair_supplier=pair_supplier,
            categories=tuple(category_index),
            suppliers=tuple(supplier_index),
        )

    def _merged(
        self, generation: Generation, kept: np.ndarray, fresh: Columns, changed_ids: np.ndarray
    ) -> Columns:
        """The ``kept`` documents of these columns and every document of ``fresh`` (built with
        these columns' category and supplier lists, extended), in id order."""
        ids = np.concatenate([self.ids[kept], fresh.ids])
        order = np.argsort(ids, kind="stable")
        position = np.empty(len(ids), dtype=np.int64)
        position[order] = np.arange(len(ids), dtype=np.int64)
        # Old pairs of kept documents move to their document's new position; fresh pairs follow.
        renumbered = np.cumsum(kept) - 1
        old_pairs = kept[self.pair_document]
        pair_document = np.concatenate(
            [
                position[renumbered[self.pair_document[old_pairs]]],
                position[int(kept.sum()) + fresh.pair_document],
            ]
        )

        def joined(name: str) -> np.ndarray:
            return np.concatenate([getattr(self, name)[kept], getattr(fresh, name)])[order]

        return replace(
            self,
            generation=generation,
            text_epoch=fresh.text_epoch,  # documents came or went: positions moved
            terms=self.terms.after(changed_ids),
            ids=ids[order],
            **{name: joined(name) for name in PER_DOCUMENT},
            pair_document=pair_document,
            pair_supplier=np.concatenate([self.pair_supplier[old_pairs], fresh.pair_supplier]),
            categories=fresh.categories,
            suppliers=fresh.suppliers,
        )

    # -- searching

    def locate(self, document_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The positions of these ids, and a mask of the ids held (ids not held are only
        possible when the full-text query and these columns come from different snapshots)."""
        if not len(self.ids):
            return np.zeros(len(document_ids), dtype=np.int64), np.zeros(len(document_ids), bool)
        at = np.minimum(np.searchsorted(self.ids, document_ids), len(self.ids) - 1)
        return at, self.ids[at] == document_ids

    def positions(self, document_ids: np.ndarray) -> np.ndarray:
        """A mask of the documents with these ids (ids not held are left out)."""
        mask = np.zeros(len(self.ids), dtype=bool)
        at, held = self.locate(document_ids)
        mask[at[held]] = True
        return mask

    def filters(
        self,
        category_ids: Iterable[str] | None = None,
        supplier: str | None = None,
        kind: str | None = None,
        min_price: int | None = None,
        max_price: int | None = None,
        phb_eligible: bool | None = None,
        in_stock: bool | None = None,
    ) -> Filters:
        masks: dict[str, np.ndarray] = {}
        if category_ids is not None:
            wanted = set(category_ids)
            lookup = np.array([c in wanted for c in self.categories], dtype=bool)
            masks["category"] = lookup[self.category] if len(lookup) else self._none()
        if supplier is not None:
            masks["supplier"] = self._none()
            if supplier in self.suppliers:
                code = self.suppliers.index(supplier)
                masks["supplier"][self.pair_document[self.pair_supplier == code]] = True
        if kind is not None:
            masks["kind"] = self.kind == KINDS.index(kind) if kind in KINDS else self._none()
        if min_price is not None or max_price is not None:
            price = np.ones(len(self.ids), dtype=bool)
            if min_price is not None:
                price &= self.price >= min_price
            if max_price is not None:
                price &= self.price <= max_price
            masks["unit_price"] = price
        shared = np.ones(len(self.ids), dtype=bool)
        if phb_eligible is not None:
            shared &= self.phb == phb_eligible
        if in_stock is not None:
            shared &= self.in_stock == in_stock
        masks[""] = shared
        return Filters(masks)

    def facet_counts(self, base: np.ndarray, filters: Filters) -> dict[str, dict[str, int]]:
        """The total and each facet's counts over the documents in ``base`` (a mask), each
        facet applying every filter but its own."""
        keys = [key for key, _low, _high in price_bucket_bounds()]
        supplier_docs = filters.all_but("supplier", base)[self.pair_document]
        return {
            "total": {"": int(filters.all_but(None, base).sum())},
            "category": _named(self.category, filters.all_but("category", base), self.categories),
            "kind": _named(self.kind, filters.all_but("kind", base), KINDS),
            "unit_price": _named(self.bucket, filters.all_but("unit_price", base), keys),
            "supplier": _named(self.pair_supplier, supplier_docs, self.suppliers),
        }

    def page(
        self,
        selected: np.ndarray,
        sort: str,
        after: Sequence[int] | None,
        size: int,
    ) -> list[tuple[int, int, int]]:
        """Up to ``size`` of the ``selected`` documents (a mask) in a column order, after the
        cursor's keys: (key, tie-break, id) for ``unit_price`` (ascending), ``-unit_price``
        and ``newest`` (descending; ``newest``'s key in microseconds)."""
        first = self.created if sort == "newest" else self.price
        descending = sort != "unit_price"
        at = np.flatnonzero(selected)
        keys = [first[at], self.tie_break[at], self.ids[at]]
        if descending:  # every key is a non-negative int64, so negating orders them backwards
            keys = [-k for k in keys]
        if after is not None:
            bound = [-v if descending else v for v in after]
            beyond = np.zeros(len(at), dtype=bool)
            equal = np.ones(len(at), dtype=bool)
            for key, value in zip(keys, bound, strict=True):
                beyond |= equal & (key > value)
                equal &= key == value
            at, keys = at[beyond], [k[beyond] for k in keys]
        if len(at) > size:  # only the first ``size`` by the main key can be on the page
            cut = np.partition(keys[0], size - 1)[size - 1]
            near = keys[0] <= cut
            at, keys = at[near], [k[near] for k in keys]
        order = np.lexsort(keys[::-1])[:size]
        return [
            (int(first[i]), int(self.tie_break[i]), int(self.ids[i])) for i in at[order].tolist()
        ]

    def _none(self) -> np.ndarray:
        return np.zeros(len(self.ids), dtype=bool)


@dataclass(frozen=True, eq=False)
class Matches:
    """A text query's matches as positions into the columns of one text epoch (so they can be
    kept while it lasts). Ranked: best first, score descending then id ascending (the id is
    the tie-break hash), with the scores; otherwise in no order and ``scores`` None."""

    positions: np.ndarray  # int32
    scores: np.ndarray | None  # float64

    @classmethod
    def found(
        cls, columns: Columns, document_ids: np.ndarray, scores: np.ndarray | None = None
    ) -> Matches:
        """The matches with these ids (and relevance scores, to rank them), ids unique."""
        at, held = columns.locate(document_ids)
        at = at[held].astype(np.int32)
        if scores is None:
            return cls(at, None)
        scores = scores[held]
        order = np.lexsort((at, -scores))  # positions ascend with ids
        return cls(at[order], scores[order])

    @property
    def nbytes(self) -> int:
        return self.positions.nbytes + (0 if self.scores is None else self.scores.nbytes)

    def with_exact(self, positions: np.ndarray, score: float) -> Matches:
        """These matches with exact hits (positions) first, at ``score``, in id order."""
        if not len(positions):
            return self
        exact = np.unique(positions).astype(np.int32)
        rest = ~np.isin(self.positions, exact)
        scores = None
        if self.scores is not None:
            scores = np.concatenate([np.full(len(exact), score), self.scores[rest]])
        return Matches(np.concatenate([exact, self.positions[rest]]), scores)

    def mask(self, size: int) -> np.ndarray:
        mask = np.zeros(size, dtype=bool)
        mask[self.positions] = True
        return mask

    def ranked_page(
        self,
        columns: Columns,
        selected: np.ndarray,
        after: tuple[float, int] | None,
        size: int,
    ) -> list[tuple[float, int]]:
        """Up to ``size`` of the ranked matches that are ``selected`` (a mask over the
        columns), after the cursor's (score, id): (score, id) each, best first."""
        if self.scores is None:
            raise ValueError("these matches are not ranked")
        chosen = selected[self.positions]
        ids = columns.ids[self.positions]
        if after is not None:
            score, document_id = after
            chosen &= (self.scores < score) | ((self.scores == score) & (ids > document_id))
        at = np.flatnonzero(chosen)[:size]
        return [(float(s), int(i)) for s, i in zip(self.scores[at], ids[at], strict=True)]


class ColumnStore:
    """A process's ``Columns``: the last few generations' snapshots, thread-safe."""

    def __init__(self) -> None:
        self._snapshots: OrderedDict[Generation, Columns] = OrderedDict()
        self._lock = threading.Lock()

    def at(self, session: Session, generation: Generation | None) -> Columns:
        """The columns at ``generation``, which ``session`` sees (read in its snapshot).
        ``generation`` None (the session sees its own uncommitted changes): read now, not kept."""
        if generation is None:
            return Columns.load(session, None)
        with self._lock:
            held = self._snapshots.get(generation)
            if held is not None:
                self._snapshots.move_to_end(generation)
                return held
            newest = next(reversed(self._snapshots.values()), None)
        columns = self._advance(session, newest, generation)
        with self._lock:
            self._snapshots[generation] = columns
            while len(self._snapshots) > SNAPSHOTS_KEPT:
                self._snapshots.popitem(last=False)
        return columns

    @staticmethod
    def _advance(session: Session, newest: Columns | None, generation: Generation) -> Columns:
        if newest is not None and newest.generation is not None:
            changes = changes_between(session, newest.generation, generation)
            limit = max(PATCH_LIMIT * len(newest), PATCH_ALWAYS)
            if changes is not None and len(changes.document_ids) <= limit:
                return newest.patched(session, generation, changes)
        return Columns.load(session, generation)


@dataclass(frozen=True, eq=False)
class _Read:
    """Documents as the database aggregated them: numeric columns in one order (not by id),
    and the ids of each category's, kind's and supplier's documents."""

    ids: np.ndarray
    price: np.ndarray
    in_stock: np.ndarray
    phb: np.ndarray
    tie_break: np.ndarray
    created: np.ndarray
    categories: list[tuple[str, np.ndarray]]
    kinds: list[tuple[str, np.ndarray]]
    suppliers: list[tuple[str, np.ndarray]]


def _read(session: Session, document_ids: list[int] | None) -> _Read:
    """The documents with these ids (all with None). A few documents (a catalogue change) in
    one statement of rows; more in four statements whose rows are a few strings of numbers
    each: building arrays from a hundred thousand rows of Python objects costs several times
    more."""
    postgres = session.get_bind().dialect.name == "postgresql"
    if postgres:
        created = cast(func.extract("epoch", D.c.created_at) * 1_000_000, BigInteger)
    else:  # stored as "YYYY-MM-DD HH:MM:SS.ffffff", in UTC
        created = cast(func.strftime("%s", D.c.created_at), Integer) * 1_000_000 + cast(
            func.substr(D.c.created_at, 21, 6), Integer
        )
    phb = case((and_(D.c.phb_eligible, not_(D.c.phb_excluded)), 1), else_=0)
    numbers = [D.c.id, D.c.min_unit_price_nanopence, cast(D.c.in_stock, Integer), phb]
    numbers += [D.c.tie_break, created]
    kind = type_coerce(D.c.kind, String)
    if document_ids is not None and len(document_ids) <= FEW_DOCUMENTS:
        return _read_few(session, document_ids, numbers, kind)

    def joined(column: Any) -> Any:
        """The column's values, space-separated."""
        if postgres:
            return func.string_agg(cast(column, Text), literal(" "))
        return func.group_concat(column, " ")

    # One string for all the numbers, so that each document's stay together.
    row_text = cast(numbers[0], Text)
    for number in numbers[1:]:
        row_text = row_text.concat(" ").concat(cast(number, Text))
    wanted = [] if document_ids is None else [D.c.id.in_(document_ids)]
    table = parse_numbers(session.scalar(select(joined(row_text)).where(*wanted))).reshape(
        -1, len(numbers)
    )

    def grouped(key: Any, member: Any, *where: Any) -> list[tuple[str, np.ndarray]]:
        stmt = select(key, joined(member)).where(*where).group_by(key)
        return [(str(k), parse_numbers(text)) for k, text in session.execute(stmt)]

    supplier_wanted = [] if document_ids is None else [S.c.document_id.in_(document_ids)]
    return _numbers_read(
        table,
        categories=grouped(D.c.category_id, D.c.id, *wanted),
        kinds=grouped(kind, D.c.id, *wanted),
        suppliers=grouped(S.c.supplier_id, S.c.document_id, *supplier_wanted),
    )


def _read_few(session: Session, document_ids: list[int], numbers: list[Any], kind: Any) -> _Read:
    """``_read`` of a few documents: one row per (document, supplier), in one statement."""
    rows = session.execute(
        select(*numbers, D.c.category_id, kind, S.c.supplier_id)
        .select_from(D.outerjoin(S, S.c.document_id == D.c.id))
        .where(D.c.id.in_(document_ids))
    ).all()
    width = len(numbers)
    documents: dict[int, tuple[Any, ...]] = {}
    members: dict[str, dict[str, list[int]]] = {"category": {}, "kind": {}, "supplier": {}}
    for row in rows:
        document = row[0]
        if document not in documents:
            documents[document] = row[:width]
            members["category"].setdefault(str(row[width]), []).append(document)
            members["kind"].setdefault(str(row[width + 1]), []).append(document)
        if row[width + 2] is not None:
            members["supplier"].setdefault(row[width + 2], []).append(document)
    table = np.array(list(documents.values()), dtype=np.int64).reshape(-1, width)

    def grouped(name: str) -> list[tuple[str, np.ndarray]]:
        return [(k, np.array(ids, dtype=np.int64)) for k, ids in members[name].items()]

    return _numbers_read(
        table, categories=grouped("category"), kinds=grouped("kind"), suppliers=grouped("supplier")
    )


def _numbers_read(
    table: np.ndarray,
    categories: list[tuple[str, np.ndarray]],
    kinds: list[tuple[str, np.ndarray]],
    suppliers: list[tuple[str, np.ndarray]],
) -> _Read:
    """A ``_Read`` from a table of (id, price, in stock, PHB, tie-break, created) rows."""
    ids, price, in_stock, phb_flags, tie_break, created_at = table.T
    return _Read(
        ids=ids.copy(),
        price=price.copy(),
        in_stock=in_stock.astype(bool),
        phb=phb_flags.astype(bool),
        tie_break=tie_break.copy(),
        created=created_at.copy(),
        categories=categories,
        kinds=kinds,
        suppliers=suppliers,
    )


def _joined(parts: list[_Read]) -> _Read:
    """Several reads as one."""
    if len(parts) == 1:
        return parts[0]

    def concatenated(name: str) -> np.ndarray:
        return np.concatenate([np.empty(0, dtype=np.int64), *(getattr(p, name) for p in parts)])

    return _Read(
        ids=concatenated("ids"),
        price=concatenated("price"),
        in_stock=concatenated("in_stock").astype(bool),
        phb=concatenated("phb").astype(bool),
        tie_break=concatenated("tie_break"),
        created=concatenated("created"),
        categories=[group for p in parts for group in p.categories],
        kinds=[group for p in parts for group in p.kinds],
        suppliers=[group for p in parts for group in p.suppliers],
    )


def parse_numbers(text: str | None, dtype: Any = np.int64) -> np.ndarray:
    """A space-separated list of numbers (an aggregate over no rows gives NULL)."""
    return np.fromstring(text or "", dtype=dtype, sep=" ")


def _same_pairs(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    """Whether two lists of (document position, supplier) pairs hold the same pairs."""
    if len(a[0]) != len(b[0]):
        return False
    first, second = (np.lexsort((supplier, document)) for document, supplier in (a, b))
    return bool(
        np.array_equal(a[0][first], b[0][second]) and np.array_equal(a[1][first], b[1][second])
    )


def _coded(
    ids: np.ndarray,
    groups: list[tuple[str, np.ndarray]],
    index: dict[str, int],
    dtype: type,
) -> np.ndarray:
    """Per document (``ids``, ascending), the code in ``index`` of the group it is in; codes
    for new names are added to ``index``."""
    codes = np.zeros(len(ids), dtype=dtype)
    for name, members in groups:
        codes[np.searchsorted(ids, members)] = index.setdefault(name, len(index))
    return codes


def _buckets(price: np.ndarray) -> np.ndarray:
    """Each price's bucket: the index of the first bucket whose upper bound is above it."""
    uppers = [high for _key, _low, high in price_bucket_bounds() if high is not None]
    return np.searchsorted(np.array(uppers, dtype=np.int64), price, side="right").astype(np.int8)


def _named(codes: np.ndarray, mask: np.ndarray, names: Sequence[str]) -> dict[str, int]:
    counts = np.bincount(codes[mask], minlength=len(names))
    return {names[i]: int(counts[i]) for i in np.flatnonzero(counts).tolist()}
