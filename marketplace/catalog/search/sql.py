"""The SQL search backend: ``search_documents`` with SQLite FTS5 or PostgreSQL full-text search.

One request costs a handful of statements: the spelling check of unknown query words (one
indexed lookup, plus one per unknown word); the page (by relevance, the database's own top
limit+1 by bm25/ts_rank after the cursor; in a column order, a walk of that order's index);
the rows of the page; and one statement for the total and all four facets, which reads the
matches unranked (see ``_text_facet_counts`` and ``_browse_facet_counts``). Names of
categories and suppliers come from their own tables at query time, so a renamed supplier
shows its new name at once.

With the request cache on (``cache.py``), a search first reads the search generation; the page's
ids and the counts are then taken from the cache when they were computed under that same
generation, and only the page's rows and the names are read.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from sqlalchemy import (
    Double,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    table,
    type_coerce,
    union,
    union_all,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, TSQUERY
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from ...accounts.models import Organisation
from ...errors import ValidationFailed
from ...money import unit_price
from ..models import Category, CategoryKind
from .base import (
    PRICE_BUCKETS,
    BestOffer,
    CategoryFacet,
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
    pence_to_nanopence,
    price_bucket_bounds,
)
from .cache import Generation, SearchCache, changed_documents, read_generation
from .facets import category_facets, supplier_facets, top_suppliers
from .models import SearchDocument, SearchDocumentSupplier, SearchTerm
from .text import (
    AnyOf,
    Node,
    Phrase,
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
# bm25 column weights (name, keywords, category names, description).
BM25 = (10.0, 4.0, 2.0, 1.0)
FACETS = ("category", "supplier", "kind", "unit_price")


# --- dialects -----------------------------------------------------------------------------------


class SqliteText:
    """FTS5: ``search_fts`` (porter + unicode61) and bm25 ranking; spelling by probing the word
    list with every string one edit away."""

    fts = table("search_fts")

    def render(self, node: Node) -> str:
        if isinstance(node, Phrase):
            return '"' + " ".join(node.words).replace('"', '""') + '"'
        if isinstance(node, AnyOf):
            return "(" + " OR ".join(self.render(o) for o in node.options) + ")"
        return "(" + " AND ".join(self.render(p) for p in node.parts) + ")"

    def matches(self, plan: Node) -> Any:
        """(id, score) of every match, ranked by bm25."""
        rowid = literal_column("search_fts.rowid")
        score = -func.bm25(literal_column("search_fts"), *BM25)
        return (
            select(rowid.label("id"), cast(score, Double).label("score"))
            .select_from(self.fts)
            .where(literal_column("search_fts").op("MATCH")(self.render(plan)))
        )

    def unranked(self, plan: Node, exact: list[Any]) -> tuple[Any, list[Any]]:
        """The documents matching the text (or an exact hit), unranked, as (FROM, WHERE): a
        join from the full-text index's rowids (SQLite seeks each one; an ``IN`` is slower)."""
        rowids = (
            select(literal_column("search_fts.rowid").label("id"))
            .select_from(self.fts)
            .where(literal_column("search_fts").op("MATCH")(self.render(plan)))
        )
        if exact:
            rowids = union(rowids, select(D.c.id).where(or_(*exact)))
        m = rowids.subquery("m")
        return D.join(m, m.c.id == D.c.id), []

    def candidates(self, session: Session, word: str) -> list[str]:
        return list(
            session.scalars(select(SearchTerm.term).where(SearchTerm.term.in_(edits1(word))))
        )


class PostgresText:
    """``search_fts_vector`` (english stemming, weights A-D) with a GIN index and ts_rank;
    spelling through pg_trgm's similarity on the word list (GIN trigram index)."""

    def _query(self, node: Node) -> Any:
        if isinstance(node, Phrase):
            return func.phraseto_tsquery(cast("english", REGCONFIG), " ".join(node.words))
        operator = "||" if isinstance(node, AnyOf) else "&&"
        children = node.options if isinstance(node, AnyOf) else node.parts
        result = self._query(children[0])
        for child in children[1:]:
            result = result.op(operator, return_type=TSQUERY)(self._query(child))
        return result

    def matches(self, plan: Node) -> Any:
        """(id, score) of every match, ranked by ts_rank."""
        vector = literal_column("search_documents.search_fts_vector")
        tsquery = self._query(plan)
        score = func.ts_rank(vector, tsquery)
        return select(D.c.id.label("id"), cast(score, Double).label("score")).where(
            vector.op("@@")(tsquery)
        )

    def unranked(self, plan: Node, exact: list[Any]) -> tuple[Any, list[Any]]:
        """The documents matching the text (or an exact hit), unranked, as (FROM, WHERE): a
        condition on ``search_documents`` itself, so nothing is joined to itself."""
        vector = literal_column("search_documents.search_fts_vector")
        return D, [or_(vector.op("@@")(self._query(plan)), *exact)]

    def candidates(self, session: Session, word: str) -> list[str]:
        session.execute(select(func.set_config("pg_trgm.similarity_threshold", "0.2", True)))
        return list(
            session.scalars(
                select(SearchTerm.term)
                .where(SearchTerm.term.op("%")(word))
                .order_by(func.similarity(SearchTerm.term, word).desc())
                .limit(50)
            )
        )


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
    ):
        self.synonyms = synonyms or load_synonyms()
        # Searches read through ``read_engine`` in a session of their own, one snapshot each.
        # SQLite: a small pool of long-lived connections, whose page cache and memory map stay
        # warm (the application's engine opens a connection per request, which makes a search
        # re-read every page it touches). PostgreSQL: the application's pool, REPEATABLE READ.
        self.read_engine = read_engine
        self.cache = SearchCache(cache_size)

    # -- building blocks

    def _dialect(self, session: Session) -> SqliteText | PostgresText:
        return PostgresText() if session.get_bind().dialect.name == "postgresql" else SqliteText()

    def corrections(self, session: Session, dialect: Any, words: list[str]) -> dict[str, list[str]]:
        if not words:
            return {}
        known = set(session.scalars(select(SearchTerm.term).where(SearchTerm.term.in_(words))))
        found: dict[str, list[str]] = {}
        for word in words:
            if word not in known:
                fixes = best_corrections(word, dialect.candidates(session, word))
                if fixes:
                    found[word] = fixes
        return found

    def _category_ids(self, session: Session, code: str) -> list[str]:
        path = session.scalar(select(Category.path).where(Category.code == code))
        if path is None:
            raise ValidationFailed(
                f"No category with code {code!r}.",
                errors={"category": [f"Unknown category code {code!r}."]},
                code="validation-failed",
            )
        return list(
            session.scalars(
                select(Category.id).where(Category.path.startswith(path, autoescape=True))
            )
        )

    def _filters(
        self, query: SearchQuery, doc: Any, category_ids: list[str] | None
    ) -> dict[str, list[Any]]:
        """Filter clauses by facet ("" for the ones no facet ignores)."""
        f: dict[str, list[Any]] = defaultdict(list)
        if category_ids is not None:
            f["category"].append(doc.c.category_id.in_(category_ids))
        if query.supplier:
            f["supplier"].append(
                doc.c.supplier_id == query.supplier
                if "supplier_id" in doc.c
                else doc.c.id.in_(select(S.c.document_id).where(S.c.supplier_id == query.supplier))
            )
        if query.kind:
            f["kind"].append(doc.c.kind == CategoryKind(query.kind))
        if query.min_unit_price is not None:
            f["unit_price"].append(
                doc.c.min_unit_price_nanopence >= pence_to_nanopence(query.min_unit_price)
            )
        if query.max_unit_price is not None:
            f["unit_price"].append(
                doc.c.min_unit_price_nanopence <= pence_to_nanopence(query.max_unit_price)
            )
        if query.phb_eligible is not None and "phb_eligible" in doc.c:
            eligible = and_(doc.c.phb_eligible, not_(doc.c.phb_excluded))
            f[""].append(eligible if query.phb_eligible else not_(eligible))
        if query.in_stock is not None and "in_stock" in doc.c:
            f[""].append(doc.c.in_stock == query.in_stock)
        return f

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

    def _unranked(
        self, session: Session, query: SearchQuery, plan: Node | None
    ) -> tuple[Any, list[Any]] | None:
        """The text query's matches as (FROM, WHERE) over ``search_documents``, for counting
        and for pages in a column order (neither needs a score); None when there is no text."""
        exact = self._exact(query)
        if plan is not None:
            return self._dialect(session).unranked(plan, exact)
        return (D, [or_(*exact)]) if exact else None

    def _matches(self, session: Session, query: SearchQuery, plan: Node | None) -> Any | None:
        """A selectable of (id, score) for the text query, or None when there is no text."""
        exact = self._exact(query)
        parts = []
        if plan is not None:
            parts.append(self._dialect(session).matches(plan))
        if exact:
            parts.append(
                select(D.c.id.label("id"), cast(literal(EXACT_SCORE), Double).label("score")).where(
                    or_(*exact)
                )
            )
        if not parts:
            return None
        if len(parts) == 1:
            return parts[0].subquery("m")
        both = union_all(*parts).subquery("u")
        return (
            select(both.c.id, func.max(both.c.score).label("score"))
            .group_by(both.c.id)
            .subquery("m")
        )

    # -- the search

    def search(self, session: Session, query: SearchQuery) -> SearchResult:
        if self.read_engine is not None:
            with Session(self.read_engine) as own:
                return self._search(own, query)
        return self._search(session, query)

    def _search(self, session: Session, query: SearchQuery) -> SearchResult:
        # The generation first, before any statement whose result may be cached (cache.py).
        generation = self._generation(session)
        category_ids = self._category_ids(session, query.category) if query.category else None
        key = _cache_key(query, category_ids)
        text = _Text(self, session, query)
        page_ids, next_cursor = self.cache.lookup(
            "page",
            (key, query.sort, query.limit, query.cursor),
            generation,
            lambda: self._page_ids(session, query, text, category_ids),
        )
        counts = self.cache.lookup(
            "facets",
            key,
            generation,
            lambda: self._counts(session, query, text.unscored, category_ids),
        )
        return SearchResult(
            items=self._items(session, page_ids),
            facets=self._facet_lists(session, counts),
            total=counts["total"].get("", 0),
            next_cursor=next_cursor,
        )

    def _generation(self, session: Session) -> Generation | None:
        """The search generation to file cached parts under; None when nothing may be cached
        (the cache is off, or this session's own uncommitted changes are in what it sees)."""
        if not self.cache.enabled or changed_documents(session):
            return None
        return read_generation(session)

    def _page_ids(
        self, session: Session, query: SearchQuery, text: _Text, category_ids: list[str] | None
    ) -> tuple[list[int], str | None]:
        """The page's document ids in order, and the next cursor."""
        if text.unscored is not None and query.sort == "relevance":
            # Only the page is ranked: the top limit+1 after the cursor, found by the database.
            return self._ranked_page(session, query, text.matches(), category_ids)
        return self._page(session, query, text.unscored, category_ids)

    def _items(self, session: Session, ids: list[int]) -> list[SearchItem]:
        """The items of a page, read now: names and prices are never served from the cache."""
        rows = {row.id: row for row in self._rows(session, ids)}
        return [_item(rows[i]) for i in ids if i in rows]

    def _ranked_page(
        self,
        session: Session,
        query: SearchQuery,
        matches: Any,
        category_ids: list[str] | None,
    ) -> tuple[list[int], str | None]:
        """The page by relevance: score descending, then the document id (the tie-break hash)
        ascending, after the cursor. Without filters the text index alone answers it (a top-k
        sort of the matches' scores); filters join the documents' filter columns."""
        sort = _sort_for(query, has_text=True)
        after = decode_cursor(query, len(sort.columns))
        score, doc_id = matches.c.score, matches.c.id
        stmt = select(doc_id, score)
        filters = [c for cs in self._filters(query, D, category_ids).values() for c in cs]
        if filters:
            stmt = stmt.select_from(matches.join(D, D.c.id == doc_id)).where(*filters)
        if after is not None:
            values = [cursor_value(v, t) for v, t in zip(after, sort.types, strict=True)]
            stmt = stmt.where(_keyset([score, doc_id], values, sort.descending))
        stmt = stmt.order_by(score.desc(), doc_id.asc()).limit(query.limit + 1)
        chosen = [(float(s), i) for i, s in session.execute(stmt)]
        more = len(chosen) > query.limit
        chosen = chosen[: query.limit]
        next_cursor = encode_cursor(query, list(chosen[-1])) if more and chosen else None
        return [i for _s, i in chosen], next_cursor

    def _rows(self, session: Session, ids: list[int]) -> list[Any]:
        org = Organisation.__table__
        cat = Category.__table__
        return list(
            session.execute(
                select(
                    D,
                    org.c.name.label("supplier_name"),
                    org.c.is_sme.label("supplier_is_sme"),
                    cat.c.code.label("category_code"),
                    cat.c.name.label("category_name"),
                )
                .select_from(
                    D.join(org, org.c.id == D.c.best_supplier_id).join(
                        cat, cat.c.id == D.c.category_id
                    )
                )
                .where(D.c.id.in_(ids))
            )
        )

    def _page(
        self,
        session: Session,
        query: SearchQuery,
        matches: Any | None,
        category_ids: list[str] | None,
    ) -> tuple[list[int], str | None]:
        """A keyset page in a column order (price, newest, or no text): the sort keys (the
        document id last) from the index of that order; the text match, if any, only filters."""
        sort = _sort_for(query, has_text=False)
        order = [D.c[name] for name in sort.columns]
        source, where = matches if matches is not None else (D, [])
        keys = select(*order).select_from(source).where(*where)
        for clauses in self._filters(query, D, category_ids).values():
            keys = keys.where(*clauses)
        after = decode_cursor(query, len(sort.columns))
        if after is not None:
            values = [cursor_value(v, t) for v, t in zip(after, sort.types, strict=True)]
            keys = keys.where(_keyset(order, values, sort.descending))
        keys = keys.order_by(*_ordering(order, sort.descending)).limit(query.limit + 1)
        page = [tuple(row) for row in session.execute(keys)]
        more = len(page) > query.limit
        page = page[: query.limit]
        next_cursor = encode_cursor(query, list(page[-1])) if more and page else None
        return [row[-1] for row in page], next_cursor

    def _counts(
        self,
        session: Session,
        query: SearchQuery,
        matches: Any | None,
        category_ids: list[str] | None,
    ) -> dict[str, dict[str, int]]:
        """The total and the four facets' counts (what the cache keeps: names are looked up
        per request). Each facet applies every active filter except its own, as shoppers
        expect (picking a supplier does not hide the other suppliers)."""
        if matches is not None:
            counts = self._text_facet_counts(session, query, matches, category_ids)
        else:
            counts = self._browse_facet_counts(session, query, category_ids)
        # Plain dicts, and only the suppliers the facet can show: cached entries stay small.
        frozen = {name: dict(counts[name]) for name in ("total", *FACETS)}
        frozen["supplier"] = dict(top_suppliers(frozen["supplier"]))
        return frozen

    def _facet_lists(self, session: Session, counts: dict[str, dict[str, int]]) -> Facets:
        return Facets(
            category=_category_facets(session, counts["category"]),
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

    def _text_facet_counts(
        self,
        session: Session,
        query: SearchQuery,
        matches: Any,
        category_ids: list[str] | None,
    ) -> dict[str, dict[str, int]]:
        """With a text query: read the narrow facet columns of every match once (the text
        match runs once, unranked) and count in Python. Grouping in SQL would sort every
        (product, supplier) pair of the matches in a temporary b-tree, several times slower.
        The price bucket is computed by the database, and the rows come straight from the
        driver (SQLAlchemy's per-row processing costs more than the counting)."""
        price = D.c.min_unit_price_nanopence
        bounds = price_bucket_bounds()
        bucket = case(
            *[
                (and_(*([price >= lo] if lo is not None else []), price < hi), literal(n))
                for n, (_key, lo, hi) in enumerate(bounds)
                if hi is not None
            ],
            else_=literal(len(bounds) - 1),
        )
        kind = type_coerce(D.c.kind, String)
        source, where = matches
        shared = [*where, *self._filters(query, D, category_ids).get("", [])]
        keys = [key for key, _lo, _hi in bounds]
        ranged = query.min_unit_price is not None or query.max_unit_price is not None
        if not (query.supplier or query.kind or category_ids is not None or ranged):
            # No filter that a facet ignores: every facet counts every match.
            facet_key = (
                D.c.category_id.concat(" ").concat(kind).concat(" ").concat(cast(bucket, String))
            )
            if session.get_bind().dialect.name == "postgresql":
                groups, suppliers = self._grouped_counts(session, facet_key, source, shared)
            else:
                # SQLite sorts to group: cheaper to hand over two strings (each match's
                # category/kind/bucket, and its suppliers) that Python splits and counts.
                n, keys_text, suppliers_text = session.execute(
                    select(
                        func.count(),
                        func.group_concat(facet_key, " "),
                        func.group_concat(D.c.supplier_ids, " "),
                    )
                    .select_from(source)
                    .where(*shared)
                ).one()
                words = keys_text.split(" ") if n else []
                groups = Counter(zip(words[0::3], words[1::3], words[2::3], strict=True))
                suppliers = Counter(suppliers_text.split(" ")) if n else Counter()
            counts = _empty_counts()
            for (category_id, kind_value, b), count in groups.items():
                counts["total"][""] += count
                counts["category"][category_id] += count
                counts["kind"][kind_value] += count
                counts["unit_price"][keys[int(b)]] += count
            counts["supplier"] = suppliers
            return counts
        stmt = (
            select(D.c.category_id, kind, bucket, D.c.supplier_ids, *([price] if ranged else []))
            .select_from(source)
            .where(*shared)
        )
        rows = _plain_rows(session, stmt)
        wanted_categories = set(category_ids) if category_ids is not None else None
        wanted_kind = query.kind
        low = pence_to_nanopence(query.min_unit_price) if query.min_unit_price is not None else None
        high = (
            pence_to_nanopence(query.max_unit_price) if query.max_unit_price is not None else None
        )
        counts = _empty_counts()
        for category_id, kind, b, supplier_ids, *rest in rows:
            suppliers = supplier_ids.split()
            ok_category = wanted_categories is None or category_id in wanted_categories
            ok_supplier = query.supplier is None or query.supplier in suppliers
            ok_kind = wanted_kind is None or kind == wanted_kind
            ok_price = not rest or (
                (low is None or rest[0] >= low) and (high is None or rest[0] <= high)
            )
            if ok_supplier and ok_kind and ok_price:
                counts["category"][category_id] += 1
                if ok_category:
                    counts["total"][""] += 1
            if ok_category and ok_kind and ok_price:
                for supplier in suppliers:
                    counts["supplier"][supplier] += 1
            if ok_category and ok_supplier and ok_price:
                counts["kind"][kind] += 1
            if ok_category and ok_supplier and ok_kind:
                counts["unit_price"][keys[b]] += 1
        return counts

    @staticmethod
    def _grouped_counts(
        session: Session, facet_key: Any, source: Any, where: list[Any]
    ) -> tuple[Counter[tuple[str, ...]], Counter[str]]:
        """PostgreSQL: the matches once (a CTE read twice is materialised), grouped by
        category/kind/bucket and by supplier with hash aggregates; a few hundred rows come back."""
        m = (
            select(facet_key.label("k"), D.c.supplier_ids.label("s"))
            .select_from(source)
            .where(*where)
            .cte("m")
        )
        supplier = select(func.unnest(func.string_to_array(m.c.s, " ")).label("s")).subquery()
        rows = session.execute(
            union_all(
                select(
                    literal(0).label("facet"), m.c.k.label("key"), func.count().label("n")
                ).group_by(m.c.k),
                select(literal(1), supplier.c.s, func.count()).group_by(supplier.c.s),
            )
        )
        groups: Counter[tuple[str, ...]] = Counter()
        suppliers: Counter[str] = Counter()
        for facet, key, n in rows:
            if facet == 0:
                groups[tuple(key.split(" "))] += n
            else:
                suppliers[key] += n
        return groups, suppliers

    def _browse_facet_counts(
        self, session: Session, query: SearchQuery, category_ids: list[str] | None
    ) -> dict[str, dict[str, int]]:
        """Without text: one statement whose branches each scan a covering index (of the
        documents, or of the supplier rows) with every filter but their own."""
        on_docs = self._filters(query, D, category_ids)
        on_suppliers = self._filters(query, S, category_ids)

        def others(excluded: str | None, filters: dict[str, list[Any]] = on_docs) -> list[Any]:
            return [c for name, cs in filters.items() if name != excluded for c in cs]

        price = D.c.min_unit_price_nanopence
        bucket = case(
            *[
                (
                    and_(
                        *([price >= low] if low is not None else []),
                        *([price < high] if high is not None else []),
                    ),
                    literal(key),
                )
                for key, low, high in price_bucket_bounds()
            ]
        )

        def count() -> Any:
            return func.count().label("n")

        # Grouped by an expression, not the column: otherwise SQLite walks the supplier index
        # for its order and reads every row, instead of scanning the covering index.
        supplier_key = S.c.supplier_id.concat("")
        branches = [
            select(literal("total").label("facet"), literal("").label("key"), count())
            .select_from(D)
            .where(*others(None)),
            select(literal("category"), D.c.category_id, count())
            .where(*others("category"))
            .group_by(D.c.category_id),
            select(literal("kind"), D.c.kind, count()).where(*others("kind")).group_by(D.c.kind),
            select(literal("unit_price"), bucket, count())
            .where(*others("unit_price"))
            .group_by(bucket),
            select(literal("supplier"), supplier_key, count())
            .where(*others("supplier", on_suppliers))
            .group_by(supplier_key),
        ]
        counts: dict[str, dict[str, int]] = defaultdict(dict)
        for facet, key, n in session.execute(union_all(*branches)):
            counts[facet][str(getattr(key, "value", key))] = n
        return counts


class _Text:
    """The text query's plan and matches, worked out on first use: a search answered from the
    cache needs neither (not even the spelling lookups)."""

    def __init__(self, backend: SqlSearchBackend, session: Session, query: SearchQuery):
        self.backend, self.session, self.query = backend, session, query

    @cached_property
    def plan(self) -> Node | None:
        # No searchable word (only stop words or punctuation): search as if there were no text.
        return self.backend._plan(self.session, self.query) if self.query.text else None

    @cached_property
    def unscored(self) -> tuple[Any, list[Any]] | None:
        """The matches unranked (for counting, and for pages in a column order)."""
        if not self.query.text:
            return None
        return self.backend._unranked(self.session, self.query, self.plan)

    def matches(self) -> Any:
        return self.backend._matches(self.session, self.query, self.plan)


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


def _category_facets(session: Session, counts: dict[str, int]) -> list[CategoryFacet]:
    """Counts per category including everything below it (a product in "Powered wheelchairs"
    counts for "Wheelchairs" and "Wheelchairs and mobility" too)."""
    if not counts:
        return []
    paths = {
        category_id: path
        for category_id, path in session.execute(
            select(Category.id, Category.path).where(Category.id.in_(list(counts)))
        )
    }
    rolled: dict[str, int] = defaultdict(int)
    for category_id, n in counts.items():
        for code in paths.get(category_id, "").strip("/").split("/"):
            if code:
                rolled[code] += n
    return category_facets(session, rolled)


def _empty_counts() -> dict[str, dict[str, int]]:
    return {
        "total": {"": 0},
        "category": defaultdict(int),
        "supplier": defaultdict(int),
        "kind": defaultdict(int),
        "unit_price": defaultdict(int),
    }


def _plain_rows(session: Session, stmt: Any) -> list[tuple[Any, ...]]:
    """Every row of ``stmt`` as plain DB-API tuples: tens of thousands of matches skip
    SQLAlchemy's per-row result processing (the columns asked for need none)."""
    result = session.execute(stmt)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()
