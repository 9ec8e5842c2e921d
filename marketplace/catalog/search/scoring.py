"""A ranked full-text query answered in the process from the full-text index's own postings.

The databases find a broad word's matches quickly, but ranking them costs a function call on
every match (SQLite's ``bm25()`` about 2 µs each, loading every match's position lists: 90 ms
of a 100 ms search for a word matching 46,000 products; PostgreSQL's ``ts_rank`` plus the
bitmap heap scan that reads each match's row, 70 ms), and a query of several phrases (a typo's
corrections, a synonym's alternatives) costs 20-30 ms to match. Here a ranked query is worked
out with numpy over the index's own data, the same on both databases:

- the documents that match are those the database's full-text query finds: a phrase is its
  terms at consecutive positions (in one column on SQLite, as FTS5 requires), then AND / OR
  as in the query;
- the score is bm25 by FTS5's formula (k1 = 1.2, b = 0.75, column weights 10, 4, 2, 1 for
  name, keywords, category names, description), including FTS5's rule that the phrases under
  an AND a document does not match in full do not count for it. On SQLite the scores are
  FTS5's own ``-bm25(search_fts, 10, 4, 2, 1)`` (to the last bit or two of a double; tests
  compare them). On PostgreSQL, which has no bm25, the same formula runs on the tsvector's
  lexemes (stop words dropped, a document's length its number of distinct lexemes), instead
  of ``ts_rank``.

What it reads, per database (``Fts5Postings``, ``TsvectorPostings``): each document's length;
the occurrences of each query term (document, column, position), fetched the first time a term
is asked for and kept (SQLite: ``search_fts_instances``, an ``fts5vocab`` table; PostgreSQL:
``search_fts_postings``, kept by a trigger, both from migration ``0016_search``); the terms of
a query phrase, cut by the database's own tokenizer (FTS5 in a private in-memory database with
the index's tokenizer; PostgreSQL's ``to_tsvector('english', ...)``).

A ``TermIndex`` belongs to one text epoch of the columns (``columns.py``): the same object
while only prices or stock change. After a text change the next epoch's index starts from the
last one it can build on, drops the changed documents' occurrences and lengths and reads them
again, so the terms kept so far stay valid and a broad word's first search after a text change
costs a few milliseconds, not a ranking of every match. An index is worked out on first use,
in the session of a search that sees its snapshot.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from .models import SearchDocument
from .text import AllOf, AnyOf, Node, Phrase

# bm25 column weights (name, keywords, category names, description), in the index's order.
COLUMNS = ("name", "keywords", "category_text", "description")
WEIGHTS = (10.0, 4.0, 2.0, 1.0)
K1, B = 1.2, 0.75  # FTS5's constants
# Kept occurrences above this many (21 bytes each with their keys: 170 MB) are dropped and read
# again as asked. The bound is per index: while a search still uses the previous text epoch's
# (the columns keep two snapshots), a process can hold up to twice that.
MAX_KEPT = 8_000_000
ID_BATCH = 500
_WEIGHT = np.array(WEIGHTS)
Phrasing = tuple[tuple[str, int], ...]  # a phrase's terms and their positions in it


@dataclass(frozen=True, eq=False)
class Postings:
    """A term's occurrences, ordered by document id, then place."""

    ids: np.ndarray  # int64 document id
    places: np.ndarray  # int32 where in the document: consecutive words, consecutive places
    columns: np.ndarray  # int8 the column (weight) it is in: an index into ``WEIGHTS``

    @classmethod
    def empty(cls) -> Postings:
        return cls.sorted(*(np.empty(0, dtype=np.int64) for _ in range(3)))

    @classmethod
    def sorted(cls, ids: np.ndarray, places: np.ndarray, columns: np.ndarray) -> Postings:
        """Occurrences in any order, ordered (13 bytes each)."""
        if len(ids) > 1 and not _ascending(ids, places):
            order = np.lexsort((places, ids))
            ids, places, columns = ids[order], places[order], columns[order]
        return cls(ids.astype(np.int64), places.astype(np.int32), columns.astype(np.int8))

    def __len__(self) -> int:
        return len(self.ids)

    def without(self, removed: np.ndarray) -> Postings:
        """These occurrences less those of the documents ``removed`` (sorted ids)."""
        if not len(self.ids) or not len(removed):
            return self
        starts = np.searchsorted(self.ids, removed, side="left")
        ends = np.searchsorted(self.ids, removed, side="right")
        if not (ends > starts).any():
            return self
        # +1 where a removed document's occurrences start, -1 after them: inside, the sum is 1.
        edges = np.zeros(len(self.ids) + 1, dtype=np.int64)
        np.add.at(edges, starts, 1)
        np.add.at(edges, ends, -1)
        keep = np.cumsum(edges[:-1]) == 0
        return Postings(self.ids[keep], self.places[keep], self.columns[keep])

    def joined(self, other: Postings) -> Postings:
        """These occurrences and ``other``'s (of documents not among these)."""
        if not len(other):
            return self
        at = np.searchsorted(self.ids, other.ids, side="left")
        return Postings(
            np.insert(self.ids, at, other.ids),
            np.insert(self.places, at, other.places),
            np.insert(self.columns, at, other.columns),
        )


_NO_POSTINGS = Postings.empty()


def _ascending(ids: np.ndarray, places: np.ndarray) -> bool:
    step = np.diff(ids)
    return bool((step >= 0).all() and (np.diff(places)[step == 0] > 0).all())


class PostingsSource(Protocol):
    """What a ``TermIndex`` reads from one database's full-text index."""

    def lengths(
        self, session: Session, document_ids: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Document ids (ascending) and their lengths (every document with None)."""

    def term(self, session: Session, term: str) -> Postings:
        """Every occurrence of a term."""

    def occurrences(
        self, session: Session, document_ids: list[int], terms: set[str]
    ) -> dict[str, Postings]:
        """The occurrences of ``terms`` in these documents, as they are now."""

    def phrasing(self, session: Session, phrase: str) -> Phrasing:
        """A query phrase's terms and their positions, as the full-text query reads it."""


class TermIndex:
    """The documents' lengths and the occurrences of the terms asked for so far, at one text
    epoch; worked out on first use (``_ready``) from the index it was derived from."""

    def __init__(self, base: TermIndex | None = None, changed: np.ndarray | None = None):
        self._base = base  # a ready index of an earlier epoch, or None: read everything
        self._changed = changed if changed is not None else np.empty(0, dtype=np.int64)
        self._lock = threading.RLock()
        self._ready = False
        self.ids = np.empty(0, dtype=np.int64)  # every document of the index, ascending
        self.lengths = np.empty(0, dtype=np.int64)
        self.total = 0
        self.terms: dict[str, Postings] = {}
        # Per term asked for: its occurrences as keys (the document's number in ``ids`` << 32
        # | the place; ascending, as the occurrences are) and their columns.
        self._keys: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def after(self, changed_ids: np.ndarray) -> TermIndex:
        """The index of the next text epoch, in which the documents ``changed_ids`` changed."""
        changed = np.unique(np.asarray(changed_ids, dtype=np.int64))
        with self._lock:
            if self._ready:
                return TermIndex(self, changed)
            if self._base is not None:  # never used: build on what it would have built on
                return TermIndex(self._base, np.union1d(self._changed, changed))
        return TermIndex()

    # -- working it out

    def prepare(self, session: Session, source: PostingsSource) -> TermIndex:
        """Ready to use, read in ``session`` (which sees this epoch's snapshot)."""
        with self._lock:
            if not self._ready:
                if self._base is None:
                    self.ids, self.lengths = source.lengths(session, None)
                else:
                    self._advance(session, source, self._base, self._changed)
                self.total = int(self.lengths.sum())
                self._base, self._changed, self._ready = None, self._changed[:0], True
        return self

    def _advance(
        self, session: Session, source: PostingsSource, base: TermIndex, changed: np.ndarray
    ) -> None:
        fresh_ids, fresh_lengths = source.lengths(session, changed.tolist())
        at = np.minimum(np.searchsorted(base.ids, fresh_ids), max(len(base.ids) - 1, 0))
        if len(fresh_ids) == len(changed) and (base.ids[at] == fresh_ids).all():
            # Only edits (no document came or went): the same documents, numbered the same.
            self.ids, self.lengths = base.ids, base.lengths.copy()
            self.lengths[at] = fresh_lengths
        else:
            kept = ~np.isin(base.ids, changed)
            ids = np.concatenate([base.ids[kept], fresh_ids])
            lengths = np.concatenate([base.lengths[kept], fresh_lengths])
            order = np.argsort(ids, kind="stable")
            self.ids, self.lengths = ids[order], lengths[order]
        with base._lock:  # a search of the earlier epoch may be adding a term to it
            held, keys = dict(base.terms), dict(base._keys)
        fresh = source.occurrences(session, fresh_ids.tolist(), set(held))
        for term, postings in held.items():
            now = postings.without(changed).joined(fresh.get(term, _NO_POSTINGS))
            self.terms[term] = now
            if now is postings and self.ids is base.ids and term in keys:
                self._keys[term] = keys[term]  # untouched, and numbered as before

    def _keys_of(
        self, session: Session, source: PostingsSource, term: str
    ) -> tuple[np.ndarray, np.ndarray]:
        found = self._keys.get(term)
        if found is None:
            postings = self.terms.get(term)
            if postings is None:
                with self._lock:
                    if sum(len(p) for p in self.terms.values()) > MAX_KEPT:
                        self.terms, self._keys = {}, {}
                    postings = self.terms[term] = source.term(session, term)
            at = np.minimum(np.searchsorted(self.ids, postings.ids), max(len(self.ids) - 1, 0))
            # Only occurrences of documents this index holds (the others can only come from
            # statements that saw different snapshots, or postings left behind by a restore).
            held = (self.ids[at] == postings.ids) if len(self.ids) else at < 0  # none held
            keys = (at[held].astype(np.int64) << 32) | postings.places[held]
            with self._lock:
                found = self._keys[term] = (keys, postings.columns[held])
        return found

    # -- the query

    def matches(
        self, session: Session, plan: Node, source: PostingsSource, scored: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the documents that match ``plan`` (ascending), as the database's
        full-text query finds them, and (``scored``) their bm25 scores, higher is better."""
        self.prepare(session, source)
        n = len(self.ids)
        if not n:
            return self.ids, np.zeros(0)
        frequencies: list[np.ndarray | None] = []  # per phrase: its weighted occurrences
        idfs = []
        for phrase in phrases(plan):
            weighted = self._frequencies(
                session, source, source.phrasing(session, " ".join(phrase.words))
            )
            frequencies.append(weighted)
            hits = 0 if weighted is None else int(np.count_nonzero(weighted))
            idf = float(np.log((n - hits + 0.5) / (hits + 0.5)))
            idfs.append(idf if idf > 0 else 1e-6)
        matched = _matched(plan, frequencies, 0)[0]
        if matched is None:  # only phrases without a term: nothing matches
            return self.ids[:0], np.zeros(0)
        at = np.flatnonzero(matched)
        if not scored:
            return self.ids[at], np.zeros(0)
        norm = K1 * (1 - B + B * self.lengths[at] / (self.total / n))
        scores = np.zeros(len(at))
        for idf, weighted in zip(idfs, frequencies, strict=True):
            if weighted is not None:
                f = weighted[at]
                scores += idf * (f * (K1 + 1)) / (f + norm)
        return self.ids[at], scores

    def _frequencies(
        self, session: Session, source: PostingsSource, phrasing: Phrasing
    ) -> np.ndarray | None:
        """Per document (this index's order), the phrase's occurrences weighted by column
        (None for a phrase without a term, which the query leaves out)."""
        if not phrasing:
            return None
        (first, start), rest = phrasing[0], phrasing[1:]
        keys, columns = self._keys_of(session, source, first)
        for term, position in rest:  # each next term at its place after the first
            others, _columns = self._keys_of(session, source, term)
            if not len(others):
                return np.zeros(len(self.ids))
            found = _followed(keys, others, position - start)
            keys, columns = keys[found], columns[found]
        return np.bincount(keys >> 32, weights=_WEIGHT[columns], minlength=len(self.ids))


def _followed(keys: np.ndarray, others: np.ndarray, step: int) -> np.ndarray:
    """A mask of the ``keys`` (ascending) for which ``key + step`` is among ``others``
    (ascending), searching the shorter array in the longer."""
    wanted = keys + step
    if len(others) >= len(keys):
        at = np.minimum(np.searchsorted(others, wanted), len(others) - 1)
        return others[at] == wanted
    at = np.minimum(np.searchsorted(wanted, others), len(wanted) - 1)
    found = np.zeros(len(keys), dtype=bool)
    found[at[wanted[at] == others]] = True
    return found


def _matched(
    node: Node, frequencies: list[np.ndarray | None], start: int
) -> tuple[np.ndarray | None, int]:
    """Whether each document matches ``node`` (whose first phrase is number ``start``; None
    when the node has no phrase with a term, which the query leaves out, as PostgreSQL's
    ``&&`` / ``||`` do), and the number of the phrase after its last. As in FTS5, the
    occurrences of the phrases under an AND that a document does not match in full are not
    counted for that document. (FTS5 differs in two corners ``text.build_plan`` never makes:
    a phrase of several terms inside an OR inside an AND inside another OR, whose siblings it
    may also leave uncounted; and a phrase without a token, which makes FTS5's AND match
    nothing. Plans of ``build_plan``'s shapes score as FTS5 scores them.)"""
    if isinstance(node, Phrase):
        f = frequencies[start]
        return (None if f is None else f > 0), start + 1
    masks, end = [], start
    for child in node.parts if isinstance(node, AllOf) else node.options:
        mask, end = _matched(child, frequencies, end)
        if mask is not None:
            masks.append(mask)
    if not masks:
        return None, end
    if isinstance(node, AnyOf):
        return np.logical_or.reduce(masks), end
    matched = np.logical_and.reduce(masks)
    for f in frequencies[start:end]:
        if f is not None:
            f[~matched] = 0.0
    return matched, end


def phrases(plan: Node) -> Iterator[Phrase]:
    """The plan's phrases, left to right, as FTS5 numbers them in the rendered query."""
    if isinstance(plan, Phrase):
        yield plan
    elif isinstance(plan, AnyOf):
        for option in plan.options:
            yield from phrases(option)
    elif isinstance(plan, AllOf):
        for part in plan.parts:
            yield from phrases(part)


def _numbers(value: str | None) -> np.ndarray:
    return np.fromstring(value or "", dtype=np.int64, sep=" ")


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), ID_BATCH):
        yield ids[start : start + ID_BATCH]


D = SearchDocument.__table__


def _texts(session: Session, document_ids: list[int]) -> list[tuple]:
    """The documents' ids and their text columns, as the index holds them."""
    columns = [D.c.id, *(D.c[name] for name in COLUMNS)]
    return [
        tuple(row)
        for batch in _batches(document_ids)
        for row in session.execute(select(*columns).where(D.c.id.in_(batch)))
    ]


def _grouped(found: list[tuple[str, int, int, int]], terms: set[str]) -> dict[str, Postings]:
    """(term, document id, place, column) occurrences as postings by term, for ``terms``."""
    by_term: dict[str, list[tuple[int, int, int]]] = {}
    for term, document, place, column in found:
        if term in terms:
            by_term.setdefault(term, []).append((document, place, column))
    return {
        term: Postings.sorted(*np.array(rows, dtype=np.int64).reshape(-1, 3).T.copy())
        for term, rows in by_term.items()
    }


# --- SQLite: FTS5 ---------------------------------------------------------------------------------

COLUMN_SHIFT = 24  # an FTS5 place is column << 24 | the token's offset in the column
_ALL_SIZES = text("SELECT id, sz FROM search_fts_docsize")
_SIZES = text("SELECT id, sz FROM search_fts_docsize WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_INSTANCES = text(
    "SELECT group_concat(doc, ' '), group_concat((CASE col WHEN 'name' THEN 0 "
    "WHEN 'keywords' THEN 1 WHEN 'category_text' THEN 2 ELSE 3 END) << 24 | offset, ' ') "
    "FROM search_fts_instances WHERE term = :term"
)
_TOKENIZER_TABLE = (
    "CREATE VIRTUAL TABLE t USING fts5(name, keywords, category_text, description, "
    "tokenize='porter unicode61 remove_diacritics 2')"
)


class Fts5Postings:
    """SQLite: FTS5's own records of ``search_fts``. A document's length is its number of
    tokens in all columns (``search_fts_docsize``), as bm25() counts it."""

    def lengths(
        self, session: Session, document_ids: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if document_ids is None:
            rows = session.execute(_ALL_SIZES).all()
        else:
            rows = [
                r
                for batch in _batches(document_ids)
                for r in session.execute(_SIZES, {"ids": batch})
            ]
        rows.sort()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        lengths = np.fromiter((_varint_sum(r[1]) for r in rows), dtype=np.int64, count=len(rows))
        return ids, lengths

    def term(self, session: Session, term: str) -> Postings:
        ids, places = session.execute(_INSTANCES, {"term": term}).one()
        places = _numbers(places)
        return Postings.sorted(_numbers(ids), places, places >> COLUMN_SHIFT)

    def occurrences(
        self, session: Session, document_ids: list[int], terms: set[str]
    ) -> dict[str, Postings]:
        if not document_ids or not terms:
            return {}
        found = _tokenizer().instances(_texts(session, document_ids))
        return _grouped(
            [(t, d, column << COLUMN_SHIFT | offset, column) for t, d, column, offset in found],
            terms,
        )

    def phrasing(self, session: Session, phrase: str) -> Phrasing:
        return fts5_phrasing(phrase)


def _varint_sum(blob: bytes) -> int:
    """The sum of FTS5's varints (7 bits a byte, most significant first, the high bit set on
    all but a number's last byte)."""
    total = value = 0
    for byte in blob:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            total, value = total + value, 0
    return total


class _Tokenizer:
    """FTS5 with the index's tokenizer in a private in-memory database (one per thread)."""

    def __init__(self) -> None:
        self.connection = sqlite3.connect(":memory:", isolation_level=None)
        self.connection.execute(_TOKENIZER_TABLE)
        self.connection.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")

    def instances(self, rows: list[tuple]) -> list[tuple[str, int, int, int]]:
        """(term, document id, column number, offset) of every token of these rows (the id,
        then one text per column)."""
        self.connection.execute("BEGIN")
        try:
            self.connection.executemany(
                "INSERT INTO t(rowid, name, keywords, category_text, description) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            found = self.connection.execute(
                "SELECT term, doc, (CASE col WHEN 'name' THEN 0 WHEN 'keywords' THEN 1 "
                "WHEN 'category_text' THEN 2 ELSE 3 END), offset FROM v"
            ).fetchall()
        finally:
            self.connection.execute("ROLLBACK")
        return found


_local = threading.local()


def _tokenizer() -> _Tokenizer:
    tokenizer = getattr(_local, "tokenizer", None)
    if tokenizer is None:
        tokenizer = _local.tokenizer = _Tokenizer()
    return tokenizer


@functools.lru_cache(maxsize=8192)
def fts5_phrasing(phrase: str) -> Phrasing:
    """A quoted phrase's terms, as FTS5 reads them: its tokens, at consecutive offsets."""
    found = _tokenizer().instances([(1, phrase, "", "", "")])
    return tuple(
        (term, offset) for term, _doc, _column, offset in sorted(found, key=lambda r: r[3])
    )


# --- PostgreSQL: tsvector -------------------------------------------------------------------------

_PG_LENGTHS = text(
    "SELECT string_agg(id::text || ' ' || length(search_fts_vector)::text, ' ') "
    "FROM search_documents"
)
_PG_SOME_LENGTHS = text(
    "SELECT string_agg(id::text || ' ' || length(search_fts_vector)::text, ' ') "
    "FROM search_documents WHERE id = ANY(:ids)"
)
_PG_TERM = text(
    "SELECT string_agg(document_id::text || ' ' || cardinality(places)::text, ' '), "
    "string_agg(array_to_string(places, ' '), ' ') FROM search_fts_postings WHERE term = :term"
)
_PG_OCCURRENCES = text(
    "SELECT u.lexeme, d.id, x.p, x.w FROM search_documents d "
    "CROSS JOIN LATERAL unnest(d.search_fts_vector) AS u "
    "CROSS JOIN LATERAL unnest(u.positions, u.weights) AS x(p, w) "
    "WHERE d.id = ANY(:ids) AND u.lexeme = ANY(:terms)"
)
_PG_PHRASING = text(
    "SELECT u.lexeme, p FROM unnest(to_tsvector('english', :phrase)) AS u "
    "CROSS JOIN LATERAL unnest(u.positions) AS p ORDER BY p, u.lexeme"
)
_PG_WEIGHTS = {"A": 0, "B": 1, "C": 2, "D": 3}
PLACE_BITS = 24  # a search_fts_postings place is weight << 24 | position


class TsvectorPostings:
    """PostgreSQL: ``search_fts_vector`` and ``search_fts_postings`` (its lexemes by term).
    A document's length is its number of distinct lexemes (``length(tsvector)``); places are
    tsvector positions, global to the document (PostgreSQL's phrase operator ignores weights),
    and the column is the weight (A-D)."""

    def __init__(self) -> None:
        self._phrasings: dict[str, Phrasing] = {}

    def lengths(
        self, session: Session, document_ids: list[int] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if document_ids is None:
            pairs = _numbers(session.execute(_PG_LENGTHS).scalar())
        else:
            pairs = np.concatenate(
                [
                    np.empty(0, dtype=np.int64),
                    *(
                        _numbers(session.execute(_PG_SOME_LENGTHS, {"ids": batch}).scalar())
                        for batch in _batches(document_ids)
                    ),
                ]
            )
        pairs = pairs.reshape(-1, 2)
        order = np.argsort(pairs[:, 0], kind="stable")
        return pairs[order, 0].copy(), pairs[order, 1].copy()

    def term(self, session: Session, term: str) -> Postings:
        documents, places = session.execute(_PG_TERM, {"term": term}).one()
        pairs = _numbers(documents).reshape(-1, 2)
        encoded = _numbers(places)
        ids = np.repeat(pairs[:, 0], pairs[:, 1])
        return Postings.sorted(ids, encoded & ((1 << PLACE_BITS) - 1), encoded >> PLACE_BITS)

    def occurrences(
        self, session: Session, document_ids: list[int], terms: set[str]
    ) -> dict[str, Postings]:
        if not document_ids or not terms:
            return {}
        wanted = sorted(terms)
        found = [
            (lexeme, document, position, _PG_WEIGHTS[weight])
            for batch in _batches(document_ids)
            for lexeme, document, position, weight in session.execute(
                _PG_OCCURRENCES, {"ids": batch, "terms": wanted}
            )
        ]
        return _grouped(found, terms)

    def phrasing(self, session: Session, phrase: str) -> Phrasing:
        """As ``phraseto_tsquery('english', phrase)`` reads it (stop words leave gaps)."""
        found = self._phrasings.get(phrase)
        if found is None:
            found = tuple(
                (lexeme, int(p)) for lexeme, p in session.execute(_PG_PHRASING, {"phrase": phrase})
            )
            if len(self._phrasings) > 8192:
                self._phrasings.clear()
            self._phrasings[phrase] = found
        return found


FTS5 = Fts5Postings()
TSVECTOR = TsvectorPostings()
