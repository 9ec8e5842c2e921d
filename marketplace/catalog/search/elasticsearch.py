"""The Elasticsearch backend (official ``elasticsearch`` 9.x client).

- Index: an explicit mapping (``dynamic: strict``) with an English analyzer (possessives,
  stemming, ASCII folding) at index time, and the same plus a ``synonym_graph`` filter fed from
  ``synonyms.txt`` at search time. Documents are ``search_documents`` rows (the offers'
  aggregates) plus the category codes on the path and the supplier ids.
- Alias ``ELASTICSEARCH_INDEX`` points at ``<alias>_v<N>``. ``reindex`` builds ``_v<N+1>``
  from a snapshot of ``search_documents`` with ``helpers.streaming_bulk``, swaps the alias
  atomically (``indices.update_aliases``), deletes the old index, then replays the outbox rows
  written since the snapshot, so nothing changed during the copy is lost.
- Every write uses external versioning with the outbox row id as the version, so an older
  state can never overwrite a newer one, whatever order deliveries arrive in.
- Search: ``bool`` of a cross-field match (synonyms) and a fuzzy best-field match (typos), an
  exact GTIN / part-number term boosted to the top; facet filters go in ``post_filter`` and each
  facet aggregation applies all filters but its own; ``search_after`` on a unique sort. The
  text sent is the SQL backend's query words (``text.query_words``: stop words dropped, at most
  ``MAX_QUERY_WORDS``); a query left with no word and no exact identifier searches as if it had
  no text, as in SQL.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError, helpers
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from ...db import unit_of_work, utcnow
from ...errors import ServiceUnavailable, ValidationFailed
from ...money import unit_price
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
    decode_cursor,
    encode_cursor,
    price_bucket_bounds,
)
from .facets import (
    category_facets,
    category_path,
    category_refs,
    supplier_facets,
    supplier_refs,
)
from .models import SearchDocument, SearchOutbox
from .text import (
    MAX_QUERY_WORDS,
    STOPWORDS,
    WORD,
    Synonyms,
    fold,
    gtin_in_query,
    load_synonyms,
    mpn_key,
)

log = logging.getLogger(__name__)
TEXT_FIELDS = ["name^4", "keywords^2", "category_text^1.5", "description"]
EXACT_BOOST = 1000.0
BULK_CHUNK = 1000
SYNC_BATCH = 500
OUTBOX_RETENTION_HOURS = 24
# Bulk item statuses that mean "the index holds this change or a newer one".
DELIVERED = {200, 201, 404, 409}
_ASCII_DIGITS = frozenset("0123456789")


def search_text(text: str, limit: int | None = MAX_QUERY_WORDS) -> str:
    """``text`` with the words the SQL backend ignores taken out: accent-folded, stop words
    dropped and, with ``limit``, cut after that many words, so that ``words(search_text(q)) ==
    query_words(q)``. What joins two kept words stays ("3.5mm", "o'neill" remain one token for
    the standard tokenizer, as in the index); a dropped word leaves a space."""
    folded = fold(text)
    pieces: list[str] = []
    position = kept = 0
    for match in WORD.finditer(folded):
        if match.group() in STOPWORDS:
            pieces.append(folded[position : match.start()] + " ")
        elif limit is not None and kept >= limit:
            break
        else:
            kept += 1
            pieces.append(folded[position : match.end()])
        position = match.end()
    return " ".join("".join(pieces).split()) if kept else ""  # punctuation alone is no text


def synonym_rule(line: str) -> str:
    """A ``synonyms.txt`` rule for ``synonym_graph`` with its stop words dropped, as the SQL
    backend reads it (``parse_synonyms``): the query text no longer holds them, so a rule
    written "disposal unit for hypodermic" must read "disposal unit hypodermic" to match."""
    sides = []
    for side in line.split("=>"):
        terms = (search_text(term, limit=None) for term in side.split(","))
        sides.append(", ".join(t for t in terms if t))
    return " => ".join(sides)


@dataclass
class SyncReport:
    delivered: int = 0
    failed: int = 0
    error: str | None = None


def _text(analyzer_search: bool = True) -> dict[str, Any]:
    field: dict[str, Any] = {"type": "text", "analyzer": "product_text"}
    if analyzer_search:
        field["search_analyzer"] = "product_search"
    return field


class SearchUnavailable(ServiceUnavailable):
    """Elasticsearch cannot answer a search. The API answers 503 rather than falling back to
    the SQL backend: its ranking, facets and cursors differ, so a silent switch would change
    results and break a client's paging half-way; the outage shows on ``/readyz`` too."""

    code = "search-unavailable"

    def __init__(self, detail: str, **extensions: Any):
        extensions.setdefault("headers", {"Retry-After": "10"})
        super().__init__(detail, **extensions)


class ElasticsearchBackend:
    name = "elasticsearch"

    def __init__(self, client: Elasticsearch, alias: str, synonyms: Synonyms | None = None):
        self.client = client
        self.alias = alias
        self.synonyms = synonyms or load_synonyms()

    @classmethod
    def from_settings(
        cls, settings: Any, client: Elasticsearch | None = None, **kwargs: Any
    ) -> ElasticsearchBackend:
        if client is None:
            client = Elasticsearch(
                settings.elasticsearch_url,
                request_timeout=10,
                max_retries=1,
                retry_on_timeout=False,
            )
        return cls(client, settings.elasticsearch_index, **kwargs)

    # -- the index ------------------------------------------------------------------------------

    def index_body(self) -> dict[str, Any]:
        """Settings and mappings of a new index."""
        return {
            "settings": {
                "index": {"number_of_shards": 1},
                "analysis": {
                    "filter": {
                        "english_possessive": {"type": "stemmer", "language": "possessive_english"},
                        "english_stemmer": {"type": "stemmer", "language": "english"},
                        # After the stemmer: rules are analysed by the filters before this
                        # one, so "dvt stockings" matches "DVT stocking" too.
                        "marketplace_synonyms": {
                            "type": "synonym_graph",
                            "synonyms": [synonym_rule(line) for line in self.synonyms.lines],
                        },
                    },
                    "analyzer": {
                        "product_text": {
                            "type": "custom",
                            "tokenizer": "standard",
                            "filter": [
                                "lowercase",
                                "asciifolding",
                                "english_possessive",
                                "english_stemmer",
                            ],
                        },
                        "product_search": {
                            "type": "custom",
                            "tokenizer": "standard",
                            "filter": [
                                "lowercase",
                                "asciifolding",
                                "english_possessive",
                                "english_stemmer",
                                "marketplace_synonyms",
                            ],
                        },
                    },
                },
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "product_id": {"type": "keyword"},
                    "name": _text(),
                    "keywords": _text(),
                    "category_text": _text(),
                    "description": _text(),
                    "gtin": {"type": "keyword"},
                    "manufacturer_part_number": {"type": "keyword", "index": False},
                    "mpn_key": {"type": "keyword"},
                    "category_id": {"type": "keyword"},
                    "category_codes": {"type": "keyword"},
                    "category_path": {"type": "keyword"},
                    "kind": {"type": "keyword"},
                    "phb_eligible": {"type": "boolean"},
                    "phb_excluded": {"type": "boolean"},
                    "unit_of_measure": {"type": "keyword", "index": False},
                    "units_per_pack": {"type": "integer"},
                    "offer_count": {"type": "integer"},
                    "in_stock": {"type": "boolean"},
                    "supplier_ids": {"type": "keyword"},
                    "best_offer_id": {"type": "keyword", "index": False},
                    "best_supplier_id": {"type": "keyword"},
                    "best_pack_price_pence": {"type": "long", "index": False},
                    "best_offer_in_stock": {"type": "boolean", "index": False},
                    "max_pack_price_pence": {"type": "long", "index": False},
                    "min_unit_price_nanopence": {"type": "long"},
                    "max_unit_price_nanopence": {"type": "long"},
                    "created_at": {"type": "date"},
                    "tie_break": {"type": "long"},
                },
            },
        }

    @staticmethod
    def source(doc: SearchDocument) -> dict[str, Any]:
        """The indexed body of one search document."""
        return {
            "product_id": doc.product_id,
            "name": doc.name,
            "keywords": doc.keywords,
            "category_text": doc.category_text,
            "description": doc.description,
            "gtin": doc.gtin,
            "manufacturer_part_number": doc.manufacturer_part_number,
            "mpn_key": doc.mpn_key,
            "category_id": doc.category_id,
            "category_codes": [c for c in doc.category_path.strip("/").split("/") if c],
            "category_path": doc.category_path,
            "kind": getattr(doc.kind, "value", doc.kind),
            "phb_eligible": doc.phb_eligible,
            "phb_excluded": doc.phb_excluded,
            "unit_of_measure": doc.unit_of_measure,
            "units_per_pack": doc.units_per_pack,
            "offer_count": doc.offer_count,
            "in_stock": doc.in_stock,
            "supplier_ids": doc.supplier_ids.split(),
            "best_offer_id": doc.best_offer_id,
            "best_supplier_id": doc.best_supplier_id,
            "best_pack_price_pence": doc.best_pack_price_pence,
            "best_offer_in_stock": doc.best_offer_in_stock,
            "max_pack_price_pence": doc.max_pack_price_pence,
            "min_unit_price_nanopence": doc.min_unit_price_nanopence,
            "max_unit_price_nanopence": doc.max_unit_price_nanopence,
            "created_at": doc.created_at.isoformat(),
            "tie_break": doc.tie_break,
        }

    def ping(self) -> None:
        """Readiness: the cluster answers and the alias exists."""
        if not self.client.indices.exists_alias(name=self.alias):
            raise RuntimeError(
                f"index alias {self.alias!r} is missing: run 'marketplace search reindex'"
            )

    # -- search --------------------------------------------------------------------------------

    def _filters(self, session: Session, query: SearchQuery) -> dict[str, list[dict[str, Any]]]:
        f: dict[str, list[dict[str, Any]]] = {
            "": [],
            "category": [],
            "supplier": [],
            "kind": [],
            "unit_price": [],
        }
        if query.category:
            if category_path(session, query.category) is None:
                raise ValidationFailed(
                    f"No category with code {query.category!r}.",
                    errors={"category": [f"Unknown category code {query.category!r}."]},
                )
            f["category"].append({"term": {"category_codes": query.category}})
        if query.supplier:
            f["supplier"].append({"term": {"supplier_ids": query.supplier}})
        if query.kind:
            f["kind"].append({"term": {"kind": query.kind}})
        price: dict[str, int] = {}
        low, high = query.price_bounds
        if low is not None:
            price["gte"] = low
        if high is not None:
            price["lte"] = high
        if price:
            f["unit_price"].append({"range": {"min_unit_price_nanopence": price}})
        if query.phb_eligible is not None:
            eligible = {
                "bool": {
                    "filter": [{"term": {"phb_eligible": True}}],
                    "must_not": [{"term": {"phb_excluded": True}}],
                }
            }
            f[""].append(eligible if query.phb_eligible else {"bool": {"must_not": [eligible]}})
        if query.in_stock is not None:
            f[""].append({"term": {"in_stock": query.in_stock}})
        return f

    def _sort(self, query: SearchQuery, has_text: bool) -> list[dict[str, str]]:
        # the tie-break follows a price or date order's direction, as on the SQL backend, so
        # equal prices or dates come in the same order whichever backend answers
        tail_order = "desc" if query.sort in ("-unit_price", "newest") else "asc"
        tail = [{"tie_break": tail_order}, {"product_id": tail_order}]
        head = {
            "relevance": [{"_score": "desc"}] if has_text else [],
            "unit_price": [{"min_unit_price_nanopence": "asc"}],
            "-unit_price": [{"min_unit_price_nanopence": "desc"}],
            "newest": [{"created_at": "desc"}],
        }[query.sort]
        return head + tail

    @staticmethod
    def _exact(q: str) -> list[dict[str, Any]]:
        """Boosted terms for an exact GTIN or part-number hit (``SqlSearchBackend._exact``)."""
        exact: list[dict[str, Any]] = []
        gtin = gtin_in_query(q)
        if gtin:
            exact.append({"term": {"gtin": {"value": gtin, "boost": EXACT_BOOST}}})
        key = mpn_key(q)
        if key and not _ASCII_DIGITS.isdisjoint(key):  # part numbers have digits; words do not
            exact.append({"term": {"mpn_key": {"value": key, "boost": EXACT_BOOST}}})
        return exact

    def _text_query(self, q: str) -> dict[str, Any] | None:
        """The text clause for ``q``, or None when it has no searchable word and no exact
        identifier (only stop words or punctuation): searched as if there were no text."""
        should: list[dict[str, Any]] = []
        text = search_text(q)
        if text:
            should += [
                {
                    "multi_match": {
                        "query": text,
                        "type": "cross_fields",
                        "fields": TEXT_FIELDS,
                        "operator": "and",
                        "boost": 2.0,
                    }
                },
                {
                    "multi_match": {
                        "query": text,
                        "type": "best_fields",
                        "fields": TEXT_FIELDS,
                        "operator": "and",
                        "fuzziness": "AUTO",
                        "prefix_length": 1,
                    }
                },
            ]
        should += self._exact(q)
        if not should:
            return None
        return {"bool": {"should": should, "minimum_should_match": 1}}

    def build_request(self, session: Session, query: SearchQuery) -> dict[str, Any]:
        """The body of the ``_search`` request for this query."""
        filters = self._filters(session, query)
        text_query = self._text_query(query.text) if query.text else None
        sort = self._sort(query, has_text=text_query is not None)
        after = decode_cursor(query, len(sort))
        if after is not None and not all(
            isinstance(v, int | float | str) and not isinstance(v, bool) for v in after
        ):
            raise ValidationFailed(
                "The cursor is not valid; start again without one.",
                errors={"cursor": ["Corrupt cursor."]},
            )

        def others(excluded: str) -> dict[str, Any]:
            clauses = [c for name, cs in filters.items() if name not in ("", excluded) for c in cs]
            return {"bool": {"filter": clauses}}

        ranges = []
        for key, low, high in price_bucket_bounds():
            bucket: dict[str, Any] = {"key": key}
            if low is not None:
                bucket["from"] = low
            if high is not None:
                bucket["to"] = high
            ranges.append(bucket)
        body: dict[str, Any] = {
            "size": query.limit + 1,
            "track_total_hits": True,
            "query": {
                "bool": {
                    "must": [text_query or {"match_all": {}}],
                    "filter": filters[""],
                }
            },
            "post_filter": {
                "bool": {"filter": [c for name, cs in filters.items() if name != "" for c in cs]}
            },
            "sort": sort,
            "aggs": {
                "category": {
                    "filter": others("category"),
                    "aggs": {"values": {"terms": {"field": "category_codes", "size": 1000}}},
                },
                "supplier": {
                    "filter": others("supplier"),
                    "aggs": {"values": {"terms": {"field": "supplier_ids", "size": 1000}}},
                },
                "kind": {
                    "filter": others("kind"),
                    "aggs": {"values": {"terms": {"field": "kind", "size": 10}}},
                },
                "unit_price": {
                    "filter": others("unit_price"),
                    "aggs": {
                        "values": {"range": {"field": "min_unit_price_nanopence", "ranges": ranges}}
                    },
                },
            },
        }
        if after is not None:
            body["search_after"] = after
        return body

    def search(self, session: Session, query: SearchQuery) -> SearchResult:
        body = self.build_request(session, query)
        try:
            response = self.client.search(index=self.alias, **body)
        except TransportError as error:  # unreachable, timed out: say so, do not guess
            raise SearchUnavailable(
                "Search is unavailable: the search cluster does not answer. Try again shortly.",
                search_error=type(error).__name__,
            ) from None
        except ApiError as error:
            if error.status_code == 404:
                detail = (
                    "the search index is missing (an operator runs 'marketplace search reindex')"
                )
            elif error.status_code == 429 or error.status_code >= 500:
                detail = "the search cluster is overloaded or failing"
            else:
                raise  # a query the cluster refused as malformed is a defect here: a 500
            raise SearchUnavailable(
                f"Search is unavailable: {detail}. Try again shortly.",
                search_error=str(error.error),
            ) from None
        return self.parse_response(session, query, response)

    def parse_response(self, session: Session, query: SearchQuery, response: Any) -> SearchResult:
        data = response.body if hasattr(response, "body") else response
        hits = data["hits"]["hits"]
        more = len(hits) > query.limit
        hits = hits[: query.limit]
        sources = [h["_source"] for h in hits]
        refs = category_refs(session, {s["category_id"] for s in sources})
        suppliers = supplier_refs(session, {s["best_supplier_id"] for s in sources})
        items = []
        for s in sources:
            code, name = refs.get(s["category_id"], ("", ""))
            supplier = suppliers.get(s["best_supplier_id"])
            best = unit_price(s["best_pack_price_pence"], s["units_per_pack"])
            items.append(
                SearchItem(
                    id=s["product_id"],
                    name=s["name"],
                    gtin=s.get("gtin"),
                    manufacturer_part_number=s.get("manufacturer_part_number"),
                    category=CategoryRef(code=code, name=name),
                    kind=s["kind"],
                    phb_eligible=bool(s["phb_eligible"]) and not s["phb_excluded"],
                    unit_of_measure=s["unit_of_measure"],
                    units_per_pack=s["units_per_pack"],
                    in_stock=bool(s["in_stock"]),
                    offer_count=s["offer_count"],
                    best_offer=BestOffer(
                        id=s["best_offer_id"],
                        supplier=SupplierRef(
                            id=s["best_supplier_id"],
                            name=supplier[0] if supplier else "",
                            is_sme=supplier[1] if supplier else False,
                        ),
                        pack_price_pence=s["best_pack_price_pence"],
                        unit_price_pence=best,
                        in_stock=bool(s["best_offer_in_stock"]),
                    ),
                    unit_price_range=PriceRange(
                        min_pence=best,
                        max_pence=unit_price(s["max_pack_price_pence"], s["units_per_pack"]),
                    ),
                )
            )
        next_cursor = encode_cursor(query, hits[-1]["sort"]) if more and hits else None
        aggs = data.get("aggregations", {})

        def buckets(name: str) -> dict[str, int]:
            return {
                str(b["key"]): b["doc_count"]
                for b in aggs.get(name, {}).get("values", {}).get("buckets", [])
                if b["doc_count"] > 0
            }

        prices = {
            b["key"]: b["doc_count"]
            for b in aggs.get("unit_price", {}).get("values", {}).get("buckets", [])
        }
        facets = Facets(
            category=category_facets(session, buckets("category")),
            supplier=supplier_facets(session, buckets("supplier")),
            kind=[
                ValueFacet(value=k, count=n)
                for k, n in sorted(buckets("kind").items(), key=lambda kv: (-kv[1], kv[0]))
            ],
            unit_price=[
                PriceFacet(key=key, min_pence=low, max_pence=high, count=prices.get(key, 0))
                for key, low, high in PRICE_BUCKETS
            ],
        )
        total = data["hits"]["total"]["value"]
        return SearchResult(items=items, facets=facets, total=total, next_cursor=next_cursor)

    # -- writing -------------------------------------------------------------------------------

    def _documents(self, session: Session, product_ids: list[str]) -> dict[str, SearchDocument]:
        rows = session.scalars(
            select(SearchDocument).where(SearchDocument.product_id.in_(product_ids))
        )
        return {d.product_id: d for d in rows}

    def _operations(self, index: str, changes: dict[str, int], docs: dict[str, SearchDocument]):
        """Bulk operations (action line, then source) for product id -> version."""
        operations: list[dict[str, Any]] = []
        for product_id, version in changes.items():
            meta = {
                "_index": index,
                "_id": product_id,
                "version": version,
                "version_type": "external",
            }
            doc = docs.get(product_id)
            if doc is None:
                operations.append({"delete": meta})
            else:
                operations.append({"index": meta})
                operations.append(self.source(doc))
        return operations

    def deliver(
        self,
        session_factory: sessionmaker[Session],
        changes: dict[str, int],
        index: str | None = None,
    ) -> tuple[set[str], dict[str, str]]:
        """Index the current document of each product (or delete it) with its version. Returns
        (delivered product ids, failures by product id). Raises on a transport failure."""
        with session_factory() as session:
            docs = self._documents(session, list(changes))
        operations = self._operations(index or self.alias, changes, docs)
        if not operations:
            return set(), {}
        response = self.client.bulk(operations=operations)
        delivered, failed = set(), {}
        for item in response["items"]:
            (action,) = item.values()
            if action.get("status") in DELIVERED:
                delivered.add(action["_id"])
            else:
                failed[action["_id"]] = str(action.get("error", action.get("status")))[:500]
        return delivered, failed

    def sync(
        self,
        session_factory: sessionmaker[Session],
        *,
        batch_size: int = SYNC_BATCH,
        max_batches: int | None = None,
        prune: bool = True,
    ) -> SyncReport:
        """Deliver pending outbox rows, oldest first. Elasticsearch unreachable: the rows stay
        (their attempts and last error are recorded) and the next sync delivers them.
        ``prune`` also deletes rows delivered more than a day ago."""
        report = SyncReport()
        batches = 0
        while max_batches is None or batches < max_batches:
            batches += 1
            with session_factory() as session:
                rows = session.execute(
                    select(SearchOutbox.id, SearchOutbox.product_id)
                    .where(SearchOutbox.processed_at.is_(None))
                    .order_by(SearchOutbox.id)
                    .limit(batch_size)
                ).all()
            if not rows:
                break
            changes: dict[str, int] = {}
            for row_id, product_id in rows:
                changes[product_id] = max(row_id, changes.get(product_id, 0))
            row_ids = [r[0] for r in rows]
            try:
                delivered, failed = self.deliver(session_factory, changes)
            except (TransportError, ApiError) as error:
                report.error = f"{type(error).__name__}: {error}"[:500]
                self._record_failure(session_factory, row_ids, report.error)
                report.failed += len(row_ids)
                break
            done = [r[0] for r in rows if r[1] in delivered]
            with unit_of_work(session_factory) as session:
                if done:
                    session.execute(
                        update(SearchOutbox)
                        .where(SearchOutbox.id.in_(done))
                        .values(processed_at=utcnow())
                    )
            if failed:
                report.error = next(iter(failed.values()))
                self._record_failure(
                    session_factory, [r[0] for r in rows if r[1] in failed], report.error
                )
            report.delivered += len(done)
            report.failed += len(row_ids) - len(done)
            if failed or len(rows) < batch_size:
                break
        if prune:
            self._forget_old(session_factory)
        return report

    def _record_failure(
        self, session_factory: sessionmaker[Session], row_ids: list[int], error: str
    ) -> None:
        with unit_of_work(session_factory) as session:
            session.execute(
                update(SearchOutbox)
                .where(SearchOutbox.id.in_(row_ids))
                .values(attempts=SearchOutbox.attempts + 1, last_error=error)
            )

    def _forget_old(self, session_factory: sessionmaker[Session]) -> None:
        cutoff = utcnow() - timedelta(hours=OUTBOX_RETENTION_HOURS)
        with unit_of_work(session_factory) as session:
            session.execute(
                SearchOutbox.__table__.delete().where(
                    SearchOutbox.processed_at.is_not(None), SearchOutbox.processed_at < cutoff
                )
            )

    # -- reindex -------------------------------------------------------------------------------

    def _next_index_name(self) -> str:
        existing = self.client.indices.get(index=f"{self.alias}_v*", allow_no_indices=True)
        suffixes = (name.rsplit("_v", 1)[-1] for name in existing.body)
        versions = [int(s) for s in suffixes if s.isascii() and s.isdigit()]
        return f"{self.alias}_v{max(versions, default=0) + 1}"

    def _snapshot(self, session: Session, high_water: int) -> Iterator[dict[str, Any]]:
        after = 0
        while True:
            docs = list(
                session.scalars(
                    select(SearchDocument)
                    .where(SearchDocument.id > after)
                    .order_by(SearchDocument.id)
                    .limit(BULK_CHUNK)
                )
            )
            if not docs:
                return
            for doc in docs:
                yield {
                    "_op_type": "index",
                    "_id": doc.product_id,
                    "version": high_water,
                    "version_type": "external",
                    "_source": self.source(doc),
                }
            after = docs[-1].id
            session.expunge_all()

    def reindex(
        self,
        session_factory: sessionmaker[Session],
        progress: Callable[[int], None] = lambda _n: None,
    ) -> tuple[str, int]:
        """Build a new versioned index, swap the alias to it, delete the old one(s), then replay
        the changes made meanwhile. Returns (new index name, documents indexed)."""
        name = self._next_index_name()
        self.client.indices.create(index=name, **self.index_body())
        indexed = 0
        with session_factory() as session:
            if session.get_bind().dialect.name == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            # One transaction: the outbox high-water mark and the documents are one snapshot.
            high_water = session.scalar(select(func.coalesce(func.max(SearchOutbox.id), 0))) or 0
            total = session.scalar(select(func.count()).select_from(SearchDocument)) or 0
            log.info(
                "reindex into %s: %d documents, outbox high-water mark %d", name, total, high_water
            )
            for ok, _item in helpers.streaming_bulk(
                self.client,
                self._snapshot(session, high_water),
                index=name,
                chunk_size=BULK_CHUNK,
                raise_on_error=True,
            ):
                if ok:
                    indexed += 1
                    progress(1)
            session.rollback()
        self.client.indices.refresh(index=name)
        try:
            old = list(self.client.indices.get_alias(name=self.alias).body)
        except NotFoundError:
            old = []
        actions: list[dict[str, Any]] = [
            {"remove": {"index": index, "alias": self.alias}} for index in old
        ]
        actions.append({"add": {"index": name, "alias": self.alias, "is_write_index": True}})
        self.client.indices.update_aliases(actions=actions)
        for index in old:
            if index != name:
                self.client.indices.delete(index=index)
        self.replay_since(session_factory, high_water)
        return name, indexed

    def replay_since(self, session_factory: sessionmaker[Session], high_water: int) -> int:
        """Deliver again every outbox row after the snapshot (processed or not)."""
        with session_factory() as session:
            rows = session.execute(
                select(SearchOutbox.product_id, func.max(SearchOutbox.id))
                .where(SearchOutbox.id > high_water)
                .group_by(SearchOutbox.product_id)
            ).all()
        changes = {product_id: version for product_id, version in rows}
        if changes:
            self.deliver(session_factory, changes)
        return len(changes)
