"""The SQL search backend: ``search_documents`` with SQLite FTS5 or PostgreSQL full-text search.

One request costs a handful of statements: the spelling check of the query's words (one
statement for all of them); without text, a walk of the requested order's index; the rows of
the page; and the facets' names. A text query's matches (and, by relevance, their bm25
scores) are worked out in the process from the full-text index's own postings
(``scoring.py``; a term's postings are read from the database the first time it is asked for,
then kept). The total and the four facets, and a text query's page in any order, are computed
in memory from the documents' columns (``columns.py``). Names of categories and suppliers come
from their own tables at query time, so a renamed supplier shows its new name at once.

With the request cache on (``cache.py``), a search first reads the search generation; the page's
ids and the counts are then taken from the cache when they were computed under that same
generation, and only the page's rows and the names are read. A query's plan and matches are
kept longer, under the columns' text epoch: a price or stock change leaves them valid; with
``REDIS_URL`` the matches are also shared between processes (``shared.py``).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

import numpy as np
from sqlalchemy import (
    and_,
    bindparam,
    not_,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...errors import ValidationFailed
from ...money import unit_price
from ..models import CategoryKind
from .base import (
    PRICE_BUCKETS,
    BestOffer,
    CategoryRef,
    Facets,
    PriceFacet,
    PriceRange,
    SearchItem,
    SearchQuery,
    SearchResult,
    SupplierRef,
    ValueFacet,
    cursor_value,
    decode_cursor,
    encode_cursor,
)
from .cache import (
    Generation,
    SearchCache,
    changed_documents,
    read_generation,
    read_text_version,
)
from .columns import (
    Columns,
    ColumnStore,
    Filters,
    Matches,
    from_micros,
    micros,
)
from .facets import (
    CATEGORIES,
    ORGS,
    category_facets_by_id,
    path_within,
    supplier_facets,
    top_suppliers,
)
from .models import SearchDocument, SearchDocumentSupplier
from .scoring import FTS5, TSVECTOR
from .shared import SharedMatches
from .text import (
    Node,
    Synonyms,
    best_corrections,
    build_plan,
    edits1,
    gtin_in_query,
    load_synonyms,
    mpn_key,
)

D = SearchDocument.__table__
S = SearchDocumentSupplier.__table__
EXACT_SCORE = 1_000_000.0  # an exact GTIN / part-number hit ranks above any text score
FACETS = ("category", "supplier", "kind", "unit_price")
# What a result item shows of its document (``_item``); the text columns are not read.
_ITEM_COLUMNS = (
    "id",
    "product_id",
    "name",
    "gtin",
    "manufacturer_part_number",
    "kind",
    "phb_eligible",
    "phb_excluded",
    "unit_of_measure",
    "units_per_pack",
    "in_stock",
    "offer_count",
    "best_offer_id",
    "best_supplier_id",
    "best_pack_price_pence",
    "best_offer_in_stock",
    "max_pack_price_pence",
)


# Statements run by every search, built once (building one costs more than running it).
_ITEM_ROWS = (
    select(
        *(D.c[name] for name in _ITEM_COLUMNS),
        ORGS.c.name.label("supplier_name"),
        ORGS.c.is_sme.label("supplier_is_sme"),
        CATEGORIES.c.code.label("category_code"),
        CATEGORIES.c.name.label("category_name"),
    )
    .select_from(
        D.join(ORGS, ORGS.c.id == D.c.best_supplier_id).join(
            CATEGORIES, CATEGORIES.c.id == D.c.category_id
        )
    )
    .where(D.c.id.in_(bindparam("ids", expanding=True)))
)
_BELOW = CATEGORIES.alias("below")
_CATEGORY_AND_BELOW = (
    select(_BELOW.c.id)
    .select_from(CATEGORIES)
    .join(_BELOW, path_within(_BELOW.c.path, CATEGORIES.c.path))
    .where(CATEGORIES.c.code == bindparam("code"))
)


# --- dialects -----------------------------------------------------------------------------------


# Spelling: one statement for every query word, which answers each word that is not in the word
# list with its candidate corrections (a known word, or one with no candidate, gives no row).
_SQLITE_CANDIDATES = text(
    "SELECT w.key, t.term FROM json_each(:edits) AS w, json_each(w.value) AS e"
    " JOIN search_terms AS t ON t.term = e.value"
    " WHERE NOT EXISTS (SELECT 1 FROM search_terms AS k WHERE k.term = w.key)"
)
# pg_trgm's ``%`` reads its threshold from a setting: set for this transaction in the same
# statement, before any candidate is looked up (the lateral lookup depends on its result).
_POSTGRES_CANDIDATES = text(
    "WITH threshold AS MATERIALIZED ("
    "SELECT set_config('pg_trgm.similarity_threshold', :threshold, true) AS value)"
    " SELECT w.word, c.term FROM threshold, unnest(CAST(:words AS text[])) AS w(word)"
    " CROSS JOIN LATERAL (SELECT term FROM search_terms"
    " WHERE threshold.value IS NOT NULL AND term % w.word"
    " ORDER BY similarity(term, w.word) DESC LIMIT :per_word) AS c"
    " WHERE NOT EXISTS (SELECT 1 FROM search_terms AS k WHERE k.term = w.word)"
)


class SqliteText:
    """FTS5 (``search_fts``: porter + unicode61): the query worked out from its postings;
    spelling by probing the word list with every string one edit away."""

    postings = FTS5

    def candidates(self, session: Session, words: list[str]) -> list[tuple[str, str]]:
        """(word, candidate) for each word not in the word list. The edits go as one JSON
        parameter: an ``IN`` list of hundreds costs more to compile than the lookups."""
        edits = json.dumps({word: sorted(edits1(word)) for word in words})
        return [tuple(row) for row in session.execute(_SQLITE_CANDIDATES, {"edits": edits})]


class PostgresText:
    """``search_fts_vector`` (english stemming, weights A-D): the query worked out from its
    postings (``search_fts_postings``); spelling through pg_trgm's similarity on the word list
    (GIN trigram index)."""

    postings = TSVECTOR

    def candidates(self, session: Session, words: list[str]) -> list[tuple[str, str]]:
        """(word, candidate) for each word not in the word list: the 50 most similar words."""
        params = {"words": words, "threshold": "0.2", "per_word": 50}
        return [tuple(row) for row in session.execute(_POSTGRES_CANDIDATES, params)]


# --- the backend ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sort:
    columns: tuple[str, ...]  # names in the page row
    descending: tuple[bool, ...]
    types: tuple[type, ...]


def _sort_for(query: SearchQuery, has_text: bool) -> _Sort:
    """Sort keys: the requested order, then the tie-break hash, then the document id (unique).
    The tie-break follows the main direction, so each order is one index walked one way."""
    if query.sort == "relevance" and has_text:
        # The document id is the tie-break hash: the full-text index alone orders a page.
        keys: tuple[tuple[str, bool, type], ...] = (("score", True, float), ("id", False, int))
    else:
        head = {
            "relevance": (),
            "unit_price": (("min_unit_price_nanopence", False, int),),
            "-unit_price": (("min_unit_price_nanopence", True, int),),
            "newest": (("created_at", True, datetime),),
        }[query.sort]
        tail_descending = query.sort in ("-unit_price", "newest")
        keys = (*head, ("tie_break", tail_descending, int), ("id", tail_descending, int))
    return _Sort(
        columns=tuple(k[0] for k in keys),
        descending=tuple(k[1] for k in keys),
        types=tuple(k[2] for k in keys),
    )


def _keyset(columns: Sequence[Any], values: Sequence[Any], descending: Sequence[bool]) -> Any:
    """Rows strictly after ``values`` in the order (mixed directions allowed)."""
    clauses = []
    for i, column in enumerate(columns):
        prefix = [columns[j] == values[j] for j in range(i)]
        beyond = column < values[i] if descending[i] else column > values[i]
        clauses.append(and_(*prefix, beyond))
    return or_(*clauses)


def _ordering(columns: Sequence[Any], descending: Sequence[bool]) -> list[Any]:
    return [c.desc() if d else c.asc() for c, d in zip(columns, descending, strict=True)]


class SqlSearchBackend:
    name = "sql"

    def __init__(
        self,
        synonyms: Synonyms | None = None,
        read_engine: Engine | None = None,
        cache_size: int = 0,
        cache_mb: int = 64,
        shared: SharedMatches | None = None,
    ):
        self.synonyms = synonyms or load_synonyms()
        # Searches read through ``read_engine`` in a session of their own, one snapshot each.
        # SQLite: a small pool of long-lived connections, whose page cache and memory map stay
        # warm (the application's engine opens a connection per request, which makes a search
        # re-read every page it touches). PostgreSQL: the application's pool, REPEATABLE READ.
        self.read_engine = read_engine
        self.cache = SearchCache(cache_size, max_bytes=cache_mb * 2**20)
        # Matches shared with the other processes (``shared.py``), for the queries kept here.
        self.shared = shared if self.cache.enabled else None
        self.columns = ColumnStore()

    # -- building blocks

    def _dialect(self, session: Session) -> SqliteText | PostgresText:
        return PostgresText() if session.get_bind().dialect.name == "postgresql" else SqliteText()

    def corrections(self, session: Session, dialect: Any, words: list[str]) -> dict[str, list[str]]:
        """The best corrections of each word that is not in the word list (one statement)."""
        if not words:
            return {}
        candidates: dict[str, list[str]] = defaultdict(list)
        for word, candidate in dialect.candidates(session, words):
            candidates[word].append(candidate)
        found = {word: best_corrections(word, candidates[word]) for word in words}
        return {word: fixes for word, fixes in found.items() if fixes}

    def _category_ids(self, session: Session, code: str) -> list[str]:
        """The category's id and its descendants' (a category always includes itself: none
        means there is no such code)."""
        ids = list(session.scalars(_CATEGORY_AND_BELOW, {"code": code}))
        if not ids:
            raise ValidationFailed(
                f"No category with code {code!r}.",
                errors={"category": [f"Unknown category code {code!r}."]},
                code="validation-failed",
            )
        return ids

    @staticmethod
    def _filter_clauses(query: SearchQuery, category_ids: list[str] | None) -> list[Any]:
        """The query's filters on ``search_documents``, for a page walked without text (the
        facets and the text pages filter in memory)."""
        clauses: list[Any] = []
        if category_ids is not None:
            clauses.append(D.c.category_id.in_(category_ids))
        if query.supplier:
            suppliers = select(S.c.document_id).where(S.c.supplier_id == query.supplier)
            clauses.append(D.c.id.in_(suppliers))
        if query.kind:
            clauses.append(D.c.kind == CategoryKind(query.kind))
        low, high = query.price_bounds
        if low is not None:
            clauses.append(D.c.min_unit_price_nanopence >= low)
        if high is not None:
            clauses.append(D.c.min_unit_price_nanopence <= high)
        if query.phb_eligible is not None:
            eligible = and_(D.c.phb_eligible, not_(D.c.phb_excluded))
            clauses.append(eligible if query.phb_eligible else not_(eligible))
        if query.in_stock is not None:
            clauses.append(D.c.in_stock == query.in_stock)
        return clauses

    def _plan(self, session: Session, query: SearchQuery) -> Node | None:
        dialect = self._dialect(session)
        return build_plan(
            query.text,
            self.synonyms,
            corrector=lambda words: self.corrections(session, dialect, words),
        )

    @staticmethod
    def _exact(query: SearchQuery) -> list[Any]:
        """Conditions for an exact GTIN or part-number hit."""
        exact = []
        gtin = gtin_in_query(query.text)
        if gtin:
            exact.append(D.c.gtin == gtin)
        key = mpn_key(query.text)
        if key and any(c.isdigit() for c in key):  # part numbers have digits; words do not
            exact.append(D.c.mpn_key == key)
        return exact

    @staticmethod
    def _exact_positions(session: Session, exact: list[Any], columns: Columns) -> Any:
        """The positions of the exact GTIN or part-number hits (``_exact``'s conditions; an
        index seek, never kept)."""
        if not exact:
            return np.empty(0, dtype=np.int64)
        ids = np.array(session.scalars(select(D.c.id).where(or_(*exact))).all(), dtype=np.int64)
        at, held = columns.locate(ids)
        return at[held]

    def _full_text(
        self, session: Session, plan: Node, ranked: bool, columns: Columns
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The full-text query's matches, worked out in the process from the index's postings
        (``scoring.py``): their ids, and with ``ranked`` their bm25 scores."""
        postings = self._dialect(session).postings
        ids, scores = columns.terms.matches(session, plan, postings, scored=ranked)
        return ids, scores if ranked else None

    def _shared_full_text(
        self, session: Session, plan: Node, ranked: bool, columns: Columns
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``_full_text`` through the processes' shared matches, under the text version this
        session's snapshot sees (straight from the index when there is none to trust)."""
        if self.shared is None:
            return self._full_text(session, plan, ranked, columns)
        version = read_text_version(session)
        if version is None:
            return self._full_text(session, plan, ranked, columns)
        key = self.shared.key(session.get_bind().dialect.name, plan, ranked)
        found = self.shared.get(key, version)
        if found is None:
            found = self._full_text(session, plan, ranked, columns)
            self.shared.put(key, version, *found)
        return found

    # -- the search

    def warm(self) -> None:
        """Load the documents' columns before the first search needs them (a worker process
        calls this once, when it starts)."""
        if self.read_engine is not None:
            with Session(self.read_engine) as session:
                columns = self.columns.at(session, read_generation(session))
                columns.terms.prepare(session, self._dialect(session).postings)

    def search(self, session: Session, query: SearchQuery) -> SearchResult:
        if self.read_engine is not None:
            with Session(self.read_engine) as own:
                return self._search(own, query)
        return self._search(session, query)

    def _search(self, session: Session, query: SearchQuery) -> SearchResult:
        # The generation first, before any statement whose result may be cached (cache.py).
        generation = None if changed_documents(session) else read_generation(session)
        cacheable = generation if self.cache.enabled else None
        category_ids = self._category_ids(session, query.category) if query.category else None
        key = _cache_key(query, category_ids)
        snapshot = generation if _one_snapshot(session) else None
        work = _Work(self, session, query, category_ids, snapshot, cacheable is not None)
        page_ids, next_cursor = self.cache.lookup(
            "page",
            (key, query.sort, query.limit, query.cursor),
            cacheable,
            lambda: self._page_ids(session, query, work, category_ids),
        )
        counts = self.cache.lookup("facets", key, cacheable, lambda: self._counts(work))
        return SearchResult(
            items=self._items(session, page_ids),
            facets=self._facet_lists(session, counts),
            total=counts["total"].get("", 0),
            next_cursor=next_cursor,
        )

    def _page_ids(
        self, session: Session, query: SearchQuery, work: _Work, category_ids: list[str] | None
    ) -> tuple[list[int], str | None]:
        """The page's document ids in order, and the next cursor."""
        if not work.has_text:
            return self._browse_page(session, query, category_ids)
        if query.sort == "relevance":
            return self._ranked_page(query, work)
        return self._text_page(query, work)

    def _items(self, session: Session, ids: list[int]) -> list[SearchItem]:
        """The items of a page, read now: names and prices are never served from the cache."""
        rows = {row.id: row for row in self._rows(session, ids)}
        return [_item(rows[i]) for i in ids if i in rows]

    def _ranked_page(self, query: SearchQuery, work: _Work) -> tuple[list[int], str | None]:
        """The page by relevance: score descending, then the document id (the tie-break hash)
        ascending, after the cursor; the matches ranked once and filtered in memory."""
        sort = _sort_for(query, has_text=True)
        after = decode_cursor(query, len(sort.columns))
        if after is not None:
            after = tuple(cursor_value(v, t) for v, t in zip(after, sort.types, strict=True))
        selected = work.filters.all_but(None, work.matched_mask)
        rows = work.matches.ranked_page(work.columns, selected, after, query.limit + 1)
        return _next_page(query, rows)

    def _rows(self, session: Session, ids: list[int]) -> list[Any]:
        return list(session.execute(_ITEM_ROWS, {"ids": ids}))

    def _browse_page(
        self, session: Session, query: SearchQuery, category_ids: list[str] | None
    ) -> tuple[list[int], str | None]:
        """A keyset page without text: the sort keys (the document id last) from the index of
        that order, walked from the cursor."""
        sort = _sort_for(query, has_text=False)
        order = [D.c[name] for name in sort.columns]
        keys = select(*order).where(*self._filter_clauses(query, category_ids))
        after = decode_cursor(query, len(sort.columns))
        if after is not None:
            values = [cursor_value(v, t) for v, t in zip(after, sort.types, strict=True)]
            keys = keys.where(_keyset(order, values, sort.descending))
        keys = keys.order_by(*_ordering(order, sort.descending)).limit(query.limit + 1)
        return _next_page(query, [tuple(row) for row in session.execute(keys)])

    def _text_page(self, query: SearchQuery, work: _Work) -> tuple[list[int], str | None]:
        """A page of the text query's matches in a column order, ordered in memory (the
        database would seek every match's row to sort them)."""
        sort = _sort_for(query, has_text=False)
        after = decode_cursor(query, len(sort.columns))
        if after is not None:
            after = [cursor_value(v, t) for v, t in zip(after, sort.types, strict=True)]
            after = [micros(v) if isinstance(v, datetime) else v for v in after]
        columns = work.columns
        selected = work.filters.all_but(None, work.matched_mask)
        page = columns.page(selected, query.sort, after, query.limit + 1)
        if query.sort == "newest":
            page = [(from_micros(key), tie, i) for key, tie, i in page]
        return _next_page(query, page)

    def _counts(self, work: _Work) -> dict[str, dict[str, int]]:
        """The total and the four facets' counts (what the cache keeps: names are looked up
        per request), counted in memory over the matches (every document without text). Each
        facet applies every active filter except its own, as shoppers expect (picking a
        supplier does not hide the other suppliers)."""
        counts = work.columns.facet_counts(work.matched_mask, work.filters)
        # Only the suppliers the facet can show: cached entries stay small.
        counts["supplier"] = dict(top_suppliers(counts["supplier"]))
        return counts

    def _facet_lists(self, session: Session, counts: dict[str, dict[str, int]]) -> Facets:
        return Facets(
            category=category_facets_by_id(session, counts["category"]),
            supplier=supplier_facets(session, counts["supplier"]),
            kind=[
                ValueFacet(value=k, count=n)
                for k, n in sorted(counts["kind"].items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            unit_price=[
                PriceFacet(
                    key=key, min_pence=low, max_pence=high, count=counts["unit_price"].get(key, 0)
                )
                for key, low, high in PRICE_BUCKETS
            ],
        )


class _Work:
    """What a search computes when the cache cannot answer, worked out on first use: a search
    answered from the cache needs none of it (not even the spelling lookups)."""

    def __init__(
        self,
        backend: SqlSearchBackend,
        session: Session,
        query: SearchQuery,
        category_ids: list[str] | None,
        generation: Generation | None,
        cacheable: bool,
    ):
        self.backend, self.session, self.query = backend, session, query
        self.category_ids, self.generation, self.cacheable = category_ids, generation, cacheable

    @cached_property
    def columns(self) -> Columns:
        return self.backend.columns.at(self.session, self.generation)

    @cached_property
    def text_epoch(self) -> int | None:
        """What a query's plan and matches are kept under: the columns' text epoch, while the
        full-text index answers as it did (None: not kept, computed afresh)."""
        if not self.cacheable or self.generation is None:
            return None
        return self.columns.text_epoch

    @cached_property
    def plan(self) -> Node | None:
        # No searchable word (only stop words or punctuation): search as if there were no text.
        if not self.query.text:
            return None
        # The spelling corrections depend on the word list, which only text changes change.
        return self.backend.cache.lookup(
            "plan",
            self.query.text,
            self.text_epoch,
            lambda: self.backend._plan(self.session, self.query),
        )

    @cached_property
    def exact(self) -> list[Any]:
        """Conditions for an exact GTIN or part-number hit (none without one in the text)."""
        return self.backend._exact(self.query) if self.query.text else []

    @cached_property
    def has_text(self) -> bool:
        return bool(self.query.text) and (self.plan is not None or bool(self.exact))

    @cached_property
    def matches(self) -> Matches:
        """The text query's matches (ranked when the order is relevance) with the exact hits
        first; kept per plan while the text epoch lasts. Only with text."""
        ranked = self.query.sort == "relevance"
        found = Matches(np.empty(0, dtype=np.int32), np.empty(0) if ranked else None)
        plan = self.plan
        if plan is not None:
            # Matches this process may keep may also be shared with the others.
            backend = self.backend
            full_text = backend._full_text if self.text_epoch is None else backend._shared_full_text
            found = backend.cache.lookup(
                "ranked" if ranked else "matched",
                plan,
                self.text_epoch,
                lambda: Matches.found(
                    self.columns, *full_text(self.session, plan, ranked, self.columns)
                ),
            )
        exact = self.backend._exact_positions(self.session, self.exact, self.columns)
        return found.with_exact(exact, EXACT_SCORE)

    @cached_property
    def matched_mask(self) -> Any:
        """The matches as a mask over the columns (every document without text)."""
        if not self.has_text:
            return np.ones(len(self.columns), dtype=bool)
        return self.matches.mask(len(self.columns))

    @cached_property
    def filters(self) -> Filters:
        """The query's filters as masks over the columns (the page and the counts share them)."""
        query = self.query
        low, high = query.price_bounds
        return self.columns.filters(
            category_ids=self.category_ids,
            supplier=query.supplier,
            kind=query.kind,
            min_price=low,
            max_price=high,
            phb_eligible=query.phb_eligible,
            in_stock=query.in_stock,
        )


def _one_snapshot(session: Session) -> bool:
    """True when every statement of the session's transaction sees one snapshot, so that
    columns kept for a generation describe what its full-text queries see: always on SQLite,
    on PostgreSQL from REPEATABLE READ up (as the application's searches run)."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    level = session.connection().get_execution_options().get("isolation_level")
    return level in ("REPEATABLE READ", "SERIALIZABLE")


def _next_page(query: SearchQuery, rows: list[tuple[Any, ...]]) -> tuple[list[int], str | None]:
    """The ids of up to ``limit`` rows of sort keys (the id last) and the cursor after them,
    when ``rows`` holds one more."""
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = encode_cursor(query, list(rows[-1])) if more and rows else None
    return [row[-1] for row in rows], next_cursor


def _cache_key(query: SearchQuery, category_ids: list[str] | None) -> tuple[Any, ...]:
    """What the total and the facets depend on: the exact text and filters (prices as written,
    as in the cursor's fingerprint), and the categories the category filter stands for now."""
    return (
        query.text,
        tuple(sorted(category_ids)) if category_ids is not None else None,
        query.supplier,
        query.kind,
        query.phb_eligible,
        query.in_stock,
        *(str(v) if v is not None else None for v in (query.min_unit_price, query.max_unit_price)),
    )


def _item(row: Any) -> SearchItem:
    m = row._mapping
    units = m["units_per_pack"]
    best_unit = unit_price(m["best_pack_price_pence"], units)
    kind = m["kind"]
    return SearchItem(
        id=m["product_id"],
        name=m["name"],
        gtin=m["gtin"],
        manufacturer_part_number=m["manufacturer_part_number"],
        category=CategoryRef(code=m["category_code"], name=m["category_name"]),
        kind=getattr(kind, "value", kind),
        phb_eligible=bool(m["phb_eligible"]) and not m["phb_excluded"],
        unit_of_measure=m["unit_of_measure"],
        units_per_pack=units,
        in_stock=bool(m["in_stock"]),
        offer_count=m["offer_count"],
        best_offer=BestOffer(
            id=m["best_offer_id"],
            supplier=SupplierRef(
                id=m["best_supplier_id"], name=m["supplier_name"], is_sme=bool(m["supplier_is_sme"])
            ),
            pack_price_pence=m["best_pack_price_pence"],
            unit_price_pence=best_unit,
            in_stock=bool(m["best_offer_in_stock"]),
        ),
        unit_price_range=PriceRange(
            min_pence=best_unit, max_pence=unit_price(m["max_pack_price_pence"], units)
        ),
    )
