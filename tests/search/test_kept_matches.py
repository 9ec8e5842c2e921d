"""A query's plan and matches (with their relevance scores) are kept per process while no
document's text changes: each bump of the search generation records whether it changed the
full-text index, and a price or stock change does not. Kept or not, every answer equals a fresh
backend's, and the relevance order computed in memory is bm25's (FTS5's own on SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import numpy as np
import pytest
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from marketplace.catalog.models import OfferStatus
from marketplace.catalog.search import get_backend
from marketplace.catalog.search.base import SearchQuery
from marketplace.catalog.search.cache import SearchCache
from marketplace.catalog.search.columns import Matches
from marketplace.catalog.search.documents import TEXT_COLUMNS
from marketplace.catalog.search.models import SearchChange, SearchDocument, SearchTerm
from marketplace.catalog.search.sql import SqlSearchBackend
from tests.search.fulltext import database_matches
from tests.search.test_scoring import reference_bm25
from tests.support import statements


def dialect_of(session_factory) -> str:
    return session_factory.kw["bind"].dialect.name


def new_changes(session_factory, action) -> list[bool]:
    """Run ``action``; the text flags of the generation bumps it wrote."""
    with session_factory() as session:
        before = set(session.execute(select(SearchChange.slot, SearchChange.value)).all())
    action()
    with session_factory() as session:
        rows = session.execute(
            select(SearchChange.slot, SearchChange.value, SearchChange.text_changed)
        ).all()
    return [flag for slot, value, flag in rows if (slot, value) not in before]


def test_each_bump_records_whether_the_full_text_index_changed(cat, session_factory):
    acme, bolt = cat.supplier("Acme"), cat.supplier("Bolt")
    assert new_changes(
        session_factory, lambda: cat.product("Foam dressing 10cm", "33141110", [(acme, 900)])
    ) == [True]  # a new document
    foam = cat.product("Silicone dressing", "33141110", [(acme, 500), (bolt, 550)])
    assert new_changes(
        session_factory, lambda: cat.update_offer(foam, acme, pack_price_pence=450)
    ) == [False]
    assert new_changes(session_factory, lambda: cat.update_offer(foam, acme, stock=0)) == [False]
    carr = cat.supplier("Carr")
    assert new_changes(session_factory, lambda: cat.add_offer(foam, carr, 700)) == [False]
    assert new_changes(
        session_factory, lambda: cat.update_product(foam, name="Silicone border dressing")
    ) == [True]
    assert new_changes(
        session_factory,
        lambda: cat.update_product(foam, category_id=cat.categories["18424300"].id),
    ) == [True]  # its category's name is part of its text

    def pause(supplier):
        return lambda: cat.update_offer(foam, supplier, status=OfferStatus.PAUSED)

    assert new_changes(session_factory, pause(acme)) == [False]
    assert new_changes(session_factory, pause(bolt)) == [False]
    assert new_changes(session_factory, pause(carr)) == [True]  # its last offer: document gone
    with session_factory() as session:
        document = select(SearchDocument).where(SearchDocument.product_id == foam)
        assert session.scalar(document) is None


def test_a_word_added_to_the_word_list_counts_as_a_text_change(cat, session_factory):
    """The spelling corrections a kept plan holds come from the word list: a refresh that adds
    a word it lacked (here, one deleted behind the catalogue's back) must start a new epoch."""
    acme = cat.supplier("Acme")
    foam = cat.product("Foam dressing 10cm", "33141110", [(acme, 900)])
    with session_factory.begin() as session:
        session.execute(delete(SearchTerm).where(SearchTerm.term == "foam"))
    assert new_changes(
        session_factory, lambda: cat.update_offer(foam, acme, pack_price_pence=800)
    ) == [True]
    assert new_changes(
        session_factory, lambda: cat.update_offer(foam, acme, pack_price_pence=700)
    ) == [False]  # the word is back: a price change again


def test_the_text_columns_are_the_full_text_index_s_columns(session_factory):
    with session_factory() as session:
        if dialect_of(session_factory) == "sqlite":
            indexed = {row[1] for row in session.execute(text("PRAGMA table_info(search_fts)"))}
        else:
            expression = session.scalar(
                text(
                    "SELECT generation_expression FROM information_schema.columns "
                    "WHERE table_name = 'search_documents' AND column_name = 'search_fts_vector'"
                )
            )
            indexed = {
                c.name for c in SearchDocument.__table__.columns if f"({c.name}" in expression
            }
    assert indexed == TEXT_COLUMNS


FULL_TEXT = "-- a full-text query's matches, worked out --"


@contextmanager
def full_text_work(engine) -> Iterator[list[str]]:
    """The statements ``engine`` runs in the block, and a marker each time a backend works out
    a full-text query's matches (in the database, or in the process from the index's postings,
    which may run no statement at all)."""
    original = SqlSearchBackend._full_text

    def counted(self, *args, **kwargs):
        seen.append(FULL_TEXT)
        return original(self, *args, **kwargs)

    with statements(engine) as seen:
        SqlSearchBackend._full_text = counted
        try:
            yield seen
        finally:
            SqlSearchBackend._full_text = original


def full_text_queries(seen: list[str]) -> int:
    """How many full-text queries' matches were worked out (``full_text_work``)."""
    return seen.count(FULL_TEXT)


def test_a_query_s_matches_are_kept_until_a_text_change(app, cat, session_factory):
    acme = cat.supplier("Acme")
    foam = cat.product("Foam dressing 10cm", "33141110", [(acme, 900)])
    cat.product("Gauze dressing pad", "33141110", [(acme, 300)])
    gloves = cat.product("Nitrile gloves", "18424300", [(acme, 650)])
    cat.product("Silicone dressing", "33141110", [(acme, 500)])
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine, cache_size=64)
    engine = shared.read_engine or session_factory.kw["bind"]

    def both(seen, **params):
        """The backend under test's answer, checked against a fresh backend's without any
        cache, and how many full-text queries the backend under test ran for it."""
        query = SearchQuery(**params)
        before = full_text_queries(seen)
        with session_factory() as session:
            kept = backend.search(session, query)
        asked = full_text_queries(seen) - before
        with session_factory() as session:
            fresh = SqlSearchBackend(shared.synonyms, shared.read_engine).search(session, query)
        assert (kept.total, kept.facets, kept.items) == (fresh.total, fresh.facets, fresh.items)
        return kept, asked

    with full_text_work(engine) as seen:
        assert both(seen, q="dressing")[1] == 1  # its ranked matches
        assert both(seen, q="dressing", sort="unit_price")[1] == 1  # its matches, unranked
        cat.update_offer(foam, acme, pack_price_pence=100)  # a price change: text as it was
        by_price, asked = both(seen, q="dressing", sort="unit_price")
        assert (by_price.items[0].id, asked) == (foam, 0)
        cheaper, asked = both(seen, q="dressing", max_unit_price=Decimal(150))
        assert ([i.id for i in cheaper.items], asked) == ([foam], 0)
        cat.update_product(gloves, name="Nitrile gloves for dressing changes")  # a text change
        renamed, asked = both(seen, q="dressing")
        assert gloves in {i.id for i in renamed.items}
        assert asked == 1  # the kept matches were dropped


@pytest.fixture
def ranked_catalogue(cat):
    """Products that match "dressing" with different strengths (one pair with the same text,
    a tie), and which of them Acme sells."""
    acme, bolt = cat.supplier("Acme"), cat.supplier("Bolt")
    specs = [
        ("Foam dressing 10cm", "dressing pad for wounds"),
        ("Dressing dressing foam", None),
        ("Silicone border", "a dressing with silicone adhesive dressing border"),
        ("Foam dressing 10cm", "dressing pad for wounds"),
        ("Alginate rope", "packing dressing for cavities"),
        ("Gauze swab", "not the word"),  # only its category, "wound dressing", matches
    ]
    sold_by_acme = set()
    for i, (name, description) in enumerate(specs):
        supplier = acme if i % 2 else bolt
        product = cat.product(name, "33141110", [(supplier, 100 + i)], description=description)
        if supplier is acme:
            sold_by_acme.add(product)
    return acme, sold_by_acme


def database_ranking(session: Session, backend: SqlSearchBackend, word: str) -> list[str]:
    """The products matching ``word`` by relevance (score, then the document id): FTS5's own
    bm25 order on SQLite; on PostgreSQL, which has no bm25, the database's matches ranked by
    a plain reference computation of it over the tsvectors (``test_scoring.reference_bm25``)."""
    plan = backend._plan(session, SearchQuery(q=word))
    D = SearchDocument.__table__
    products = dict(session.execute(select(D.c.id, D.c.product_id)).all())
    scores = database_matches(session, plan)
    if session.get_bind().dialect.name != "sqlite":
        reference = reference_bm25(session, plan)
        assert reference.keys() == scores.keys()
        scores = reference
    return [products[i] for i in sorted(scores, key=lambda i: (-scores[i], i))]


def walk(backend: SqlSearchBackend, session_factory, **params) -> list[str]:
    """Every page, two at a time: each cursor crosses a page boundary."""
    walked: list[str] = []
    cursor = None
    while True:
        with session_factory() as session:
            page = backend.search(session, SearchQuery(**params, limit=2, cursor=cursor))
        walked += [item.id for item in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return walked


def test_the_relevance_order_in_memory_is_the_database_s_own(
    app, ranked_catalogue, session_factory
):
    acme, sold_by_acme = ranked_catalogue
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine, cache_size=64)
    with session_factory() as session:
        expected = database_ranking(session, backend, "dressing")
    assert len(expected) == 6  # the gauze swab by its category's name alone
    assert walk(backend, session_factory, q="dressing") == expected
    # With a filter: the same order, less the documents it leaves out.
    by_acme = walk(backend, session_factory, q="dressing", supplier=acme.id)
    assert by_acme == [p for p in expected if p in sold_by_acme]
    assert 0 < len(by_acme) < len(expected)


def test_exact_hits_come_first_and_are_not_repeated():
    ids = np.array([10, 20, 30, 40], dtype=np.int64)

    class FourColumns:
        def locate(self, document_ids):
            at = np.searchsorted(ids, document_ids)
            return at, ids[np.minimum(at, 3)] == document_ids

    columns = FourColumns()
    ranked = Matches.found(columns, np.array([30, 10, 40]), np.array([0.5, 2.0, 0.5]))
    assert ranked.positions.tolist() == [0, 2, 3]  # score descending, then id
    both = ranked.with_exact(np.array([2, 1]), 1e6)
    assert both.positions.tolist() == [1, 2, 0, 3]
    assert both.scores.tolist() == [1e6, 1e6, 2.0, 0.5]
    assert Matches.found(columns, np.array([40, 99])).positions.tolist() == [3]  # 99 not held


class Weighed:
    def __init__(self, nbytes):
        self.nbytes = nbytes


def test_the_cache_keeps_matches_within_its_byte_budget():
    cache = SearchCache(size=10, max_bytes=100)
    for key in "abc":
        cache.lookup("ranked", key, 1, lambda: Weighed(40))
    assert (len(cache), cache.nbytes) == (2, 80)  # "a" went to keep the budget
    computed = []
    cache.lookup("ranked", "a", 1, lambda: computed.append(1) or Weighed(40))
    assert computed == [1]
    cache.lookup("ranked", "huge", 1, lambda: Weighed(101))  # larger than the budget: not kept
    assert (len(cache), cache.nbytes) == (2, 80)
    cache.lookup("ranked", "c", 2, lambda: Weighed(101))  # and an older entry of it is dropped
    assert (len(cache), cache.nbytes) == (1, 40)
    cache.lookup("ranked", "c", 2, lambda: Weighed(40))
    assert (len(cache), cache.nbytes) == (2, 80)
    cache.lookup("page", "small", 1, lambda: [1, 2, 3])  # weighs nothing
    assert (len(cache), cache.nbytes) == (3, 80)
