"""A ranked full-text query answered in the process from the full-text index's own postings
(SQLite).

FTS5 finds a broad word's matches in about 0.05 µs each, but ranking them with its ``bm25()``
costs about 2 µs each (the auxiliary function loads every match's position lists): 90 ms of a
100 ms search for a word with 46,000 matches; and a query of several phrases (a typo's
corrections, a synonym's alternatives) costs 20-30 ms to match. Here a ranked query is
worked out with numpy over FTS5's own data: the documents that match are those
``search_fts MATCH`` finds (phrases of consecutive terms in one column, AND, OR) and their
scores are FTS5's ``bm25(search_fts, 10, 4, 2, 1)``, by its formula (to the last bit or two
of a double; tests compare both with FTS5's):

- the occurrences of each query term (document, column, offset) come from the index through
  ``search_fts_instances`` (an ``fts5vocab`` table, migration ``0016_search``), fetched the
  first time a term is scored and kept;
- each document's length (tokens in all columns) comes from FTS5's ``search_fts_docsize``;
- a query phrase is cut into terms by FTS5 itself, with the index's tokenizer, in a private
  in-memory database (``_TOKENIZER_TABLE`` must keep the migration's tokenizer; a test
  compares them).

A ``TermIndex`` belongs to one text epoch of the columns (``columns.py``): the same object
while only prices or stock change. After a text change the next epoch's index starts from the
last one it can build on, drops the changed documents' occurrences and lengths and reads them
again (their current text is cut into terms with the same tokenizer), so the terms kept so far
stay valid and a broad word's first search after a text change costs a few milliseconds, not a
ranking of every match. An index is worked out on first use, in the session of a search that
sees its snapshot.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from .models import SearchDocument
from .text import AllOf, AnyOf, Node, Phrase

# bm25 column weights (name, keywords, category names, description), in the index's order.
COLUMNS = ("name", "keywords", "category_text", "description")
WEIGHTS = (10.0, 4.0, 2.0, 1.0)
K1, B = 1.2, 0.75  # FTS5's constants
COLUMN_SHIFT = 24  # a place is column << 24 | token offset within the column (as in SQL)
# Kept occurrences above this many (12 bytes each, about 100 MB) are dropped and fetched again.
MAX_KEPT = 8_000_000
ID_BATCH = 500
_WEIGHT = np.array(WEIGHTS)


@dataclass(frozen=True, eq=False)
class Postings:
    """A term's occurrences, ordered by document id, then place."""

    ids: np.ndarray  # int64 document id
    places: np.ndarray  # int64 column << COLUMN_SHIFT | offset

    @classmethod
    def empty(cls) -> Postings:
        return cls(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))

    @classmethod
    def sorted(cls, ids: np.ndarray, places: np.ndarray) -> Postings:
        if len(ids) > 1 and not _ascending(ids, places):
            order = np.lexsort((places, ids))
            ids, places = ids[order], places[order]
        return cls(ids, places)

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
        keep = np.ones(len(self.ids), dtype=bool)
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            keep[start:end] = False
        return Postings(self.ids[keep], self.places[keep])

    def joined(self, other: Postings) -> Postings:
        """These occurrences and ``other``'s (of documents not among these)."""
        if not len(other):
            return self
        at = np.searchsorted(self.ids, other.ids, side="left")
        return Postings(
            np.insert(self.ids, at, other.ids), np.insert(self.places, at, other.places)
        )


def _ascending(ids: np.ndarray, places: np.ndarray) -> bool:
    step = np.diff(ids)
    return bool((step >= 0).all() and (np.diff(places)[step == 0] > 0).all())


class TermIndex:
    """The documents' lengths and the occurrences of the terms scored so far, at one text
    epoch; worked out on first use (``_ready``) from the index it was derived from."""

    def __init__(self, base: TermIndex | None = None, changed: np.ndarray | None = None):
        self._base = base  # a ready index of an earlier epoch, or None: read everything
        self._changed = changed if changed is not None else np.empty(0, dtype=np.int64)
        self._lock = threading.RLock()
        self._ready = False
        self.ids = np.empty(0, dtype=np.int64)  # every document of the index, ascending
        self.lengths = np.empty(0, dtype=np.int64)  # tokens in all its columns
        self.total = 0
        self.terms: dict[str, Postings] = {}
        # Per term kept: its occurrences as keys, the document's number in ``ids`` << 32 |
        # the place (ascending, as the occurrences are).
        self._keys: dict[str, np.ndarray] = {}

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

    def prepare(self, session: Session) -> TermIndex:
        """Ready to score, read in ``session`` (which sees this epoch's snapshot)."""
        with self._lock:
            if not self._ready:
                if self._base is None:
                    self._load(session)
                else:
                    self._advance(session, self._base, self._changed)
                self._base, self._changed, self._ready = None, self._changed[:0], True
        return self

    def _load(self, session: Session) -> None:
        self.ids, self.lengths = _lengths(session, None)
        self.total = int(self.lengths.sum())

    def _advance(self, session: Session, base: TermIndex, changed: np.ndarray) -> None:
        kept = ~np.isin(base.ids, changed)
        fresh_ids, fresh_lengths = _lengths(session, changed.tolist())
        ids = np.concatenate([base.ids[kept], fresh_ids])
        lengths = np.concatenate([base.lengths[kept], fresh_lengths])
        order = np.argsort(ids, kind="stable")
        self.ids, self.lengths = ids[order], lengths[order]
        self.total = int(self.lengths.sum())
        fresh = _occurrences(session, fresh_ids.tolist(), set(base.terms))
        self.terms = {
            term: postings.without(changed).joined(fresh.get(term, Postings.empty()))
            for term, postings in base.terms.items()
        }

    def _postings(self, session: Session, term: str) -> Postings:
        held = self.terms.get(term)
        if held is None:
            with self._lock:
                if sum(len(p) for p in self.terms.values()) > MAX_KEPT:
                    self.terms, self._keys = {}, {}
                held = self.terms[term] = _term_postings(session, term)
        return held

    def _keys_of(self, session: Session, term: str) -> np.ndarray:
        keys = self._keys.get(term)
        if keys is None:
            postings = self._postings(session, term)
            keys = (np.searchsorted(self.ids, postings.ids) << 32) | postings.places
            self._keys[term] = keys
        return keys

    # -- scoring

    def matches(self, session: Session, plan: Node) -> tuple[np.ndarray, np.ndarray]:
        """The ids of the documents that match ``plan`` (ascending), as ``search_fts MATCH``
        finds them, and their bm25 scores, higher is better: FTS5's ``-bm25(search_fts, 10,
        4, 2, 1)``."""
        self.prepare(session)
        n = len(self.ids)
        if not n:
            return self.ids, np.zeros(0)
        frequencies, idfs = [], []  # per phrase: its weighted occurrences in each document
        for phrase in phrases(plan):
            weighted = self._frequencies(session, phrase_terms(" ".join(phrase.words)))
            hits = int(np.count_nonzero(weighted))
            idf = float(np.log((n - hits + 0.5) / (hits + 0.5)))
            frequencies.append(weighted)
            idfs.append(idf if idf > 0 else 1e-6)
        at = np.flatnonzero(_matched(plan, frequencies, 0)[0])
        norm = K1 * (1 - B + B * self.lengths[at] / (self.total / n))
        scores = np.zeros(len(at))
        for idf, weighted in zip(idfs, frequencies, strict=True):
            f = weighted[at]
            scores += idf * (f * (K1 + 1)) / (f + norm)
        return self.ids[at], scores

    def _frequencies(self, session: Session, terms: tuple[str, ...]) -> np.ndarray:
        """Per document (this index's order), the phrase's occurrences weighted by column."""
        if not terms:  # FTS5 finds nothing for a phrase without a token
            return np.zeros(len(self.ids))
        keys = self._keys_of(session, terms[0])
        for step, term in enumerate(terms[1:], start=1):  # the next terms at the next offsets
            others = self._keys_of(session, term)
            if not len(others):
                return np.zeros(len(self.ids))
            keys = keys[_followed(keys, others, step)]
        documents, places = keys >> 32, keys & 0xFFFFFFFF
        weights = _WEIGHT[places >> COLUMN_SHIFT]
        return np.bincount(documents, weights=weights, minlength=len(self.ids))


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


def _matched(node: Node, frequencies: list[np.ndarray], start: int) -> tuple[np.ndarray, int]:
    """Whether each document matches ``node`` (whose first phrase is number ``start``), and the
    number of the phrase after its last. As in FTS5, the occurrences of the phrases under an
    AND that a document does not match in full are not counted for that document."""
    if isinstance(node, Phrase):
        return frequencies[start] > 0, start + 1
    masks, end = [], start
    for child in node.parts if isinstance(node, AllOf) else node.options:
        mask, end = _matched(child, frequencies, end)
        masks.append(mask)
    if isinstance(node, AnyOf):
        return np.logical_or.reduce(masks), end
    matched = np.logical_and.reduce(masks)
    for f in frequencies[start:end]:
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


# --- reading the index ---------------------------------------------------------------------------

D = SearchDocument.__table__
_ALL_SIZES = text("SELECT id, sz FROM search_fts_docsize")
_SIZES = text("SELECT id, sz FROM search_fts_docsize WHERE id IN :ids").bindparams(
    bindparam("ids", expanding=True)
)
_INSTANCES = text(
    "SELECT group_concat(doc, ' '), group_concat((CASE col WHEN 'name' THEN 0 "
    "WHEN 'keywords' THEN 1 WHEN 'category_text' THEN 2 ELSE 3 END) << 24 | offset, ' ') "
    "FROM search_fts_instances WHERE term = :term"
)


def _numbers(value: str | None) -> np.ndarray:
    return np.fromstring(value or "", dtype=np.int64, sep=" ")


def _term_postings(session: Session, term: str) -> Postings:
    ids, places = session.execute(_INSTANCES, {"term": term}).one()
    return Postings.sorted(_numbers(ids), _numbers(places))


def _lengths(session: Session, document_ids: list[int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Document ids (ascending) and their lengths in tokens, from FTS5's own record of them
    (every document with None). ``sz`` holds one varint per column."""
    if document_ids is None:
        rows = session.execute(_ALL_SIZES).all()
    else:
        rows = [
            r for batch in _batches(document_ids) for r in session.execute(_SIZES, {"ids": batch})
        ]
    rows.sort()
    ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
    lengths = np.fromiter((_varint_sum(r[1]) for r in rows), dtype=np.int64, count=len(rows))
    return ids, lengths


def _batches(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), ID_BATCH):
        yield ids[start : start + ID_BATCH]


def _varint_sum(blob: bytes) -> int:
    """The sum of SQLite varints (7 bits a byte, high bit set on all but the last byte)."""
    total = value = shift = 0
    for byte in blob:
        value |= (byte & 0x7F) << shift
        if byte & 0x80:
            shift += 7
        else:
            total, value, shift = total + value, 0, 0
    return total


def _occurrences(session: Session, document_ids: list[int], terms: set[str]) -> dict[str, Postings]:
    """The occurrences of ``terms`` in these documents' current text, cut into terms by the
    index's tokenizer."""
    if not document_ids or not terms:
        return {}
    rows = []
    for batch in _batches(document_ids):
        rows.extend(
            session.execute(
                select(D.c.id, *(D.c[name] for name in COLUMNS)).where(D.c.id.in_(batch))
            ).all()
        )
    found: dict[str, tuple[list[int], list[int]]] = {}
    for term, document, column, offset in _tokenizer().instances(rows):
        if term in terms:
            ids, places = found.setdefault(term, ([], []))
            ids.append(document)
            places.append(column << COLUMN_SHIFT | offset)
    return {
        term: Postings.sorted(np.array(ids, dtype=np.int64), np.array(places, dtype=np.int64))
        for term, (ids, places) in found.items()
    }


# --- the tokenizer ---------------------------------------------------------------------------------


_TOKENIZER_TABLE = (
    "CREATE VIRTUAL TABLE t USING fts5(name, keywords, category_text, description, "
    "tokenize='porter unicode61 remove_diacritics 2')"
)


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
                [tuple(r) for r in rows],
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
def phrase_terms(phrase: str) -> tuple[str, ...]:
    """The index's terms for a query phrase, in order (FTS5 reads a quoted phrase's tokens as
    consecutive terms)."""
    found = _tokenizer().instances([(1, phrase, "", "", "")])
    return tuple(term for term, _doc, _column, _offset in sorted(found, key=lambda r: r[3]))
