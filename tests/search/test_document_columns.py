"""The search documents' columns in memory (``columns.py``) and the change log that keeps them
current (``cache.changes_between``): counting and ordering agree with a plain reference on
random documents, a process follows each catalogue change by re-reading only what changed, and
it reloads whenever the log cannot say what changed. Runs on SQLite and, with
MARKETPLACE_TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update
from sqlalchemy.exc import OperationalError

from marketplace.catalog.models import OfferStatus
from marketplace.catalog.search import cache as cache_module
from marketplace.catalog.search import columns as columns_module
from marketplace.catalog.search import get_backend, warm_up
from marketplace.catalog.search.base import SearchQuery, encode_cursor, price_bucket_bounds
from marketplace.catalog.search.cache import (
    CHANGES_KEPT,
    Changes,
    bump_generation,
    changes_between,
    prune_changes,
    read_generation,
)
from marketplace.catalog.search.columns import KINDS, Columns, _Read
from marketplace.catalog.search.models import SearchChange
from marketplace.catalog.search.sql import SqlSearchBackend
from marketplace.db import utcnow
from tests.search.conftest import search

# --- counting and ordering, against a reference -------------------------------------------------

CATEGORIES = ("cat_a", "cat_b", "cat_c")
SUPPLIERS = ("org_x", "org_y", "org_z")
BOUNDS = price_bucket_bounds()
PRICES = [0, 5 * 10**9, 10 * 10**9, 99 * 10**9, 100 * 10**9, 20_000 * 10**9]  # bucket edges


def bucket_of(price: int) -> str:
    return next(
        key
        for key, low, high in BOUNDS
        if (low is None or price >= low) and (high is None or price < high)
    )


documents = st.lists(
    st.fixed_dictionaries(
        {
            "category": st.sampled_from(CATEGORIES),
            "kind": st.sampled_from(KINDS),
            "price": st.sampled_from(PRICES),
            "in_stock": st.booleans(),
            "phb": st.booleans(),
            "tie_break": st.integers(0, 3),  # ties, so the id must decide
            "created": st.integers(0, 3),
            "suppliers": st.sets(st.sampled_from(SUPPLIERS), min_size=1),
        }
    ),
    max_size=25,
)


def columns_of(docs: list[dict]) -> Columns:
    """Columns built as from the database, the ids shuffled (they arrive in any order)."""
    ids = np.array([1000 - 7 * i for i in range(len(docs))], dtype=np.int64)

    def numbers(name: str, dtype: type = np.int64) -> np.ndarray:
        return np.array([d[name] for d in docs], dtype=dtype)

    def groups(values: tuple[str, ...], has) -> list[tuple[str, np.ndarray]]:
        found = [(v, ids[[i for i, d in enumerate(docs) if has(d, v)]]) for v in values]
        return [(v, members) for v, members in found if len(members)]

    read = _Read(
        ids=ids,
        price=numbers("price"),
        in_stock=numbers("in_stock", bool),
        phb=numbers("phb", bool),
        tie_break=numbers("tie_break"),
        created=numbers("created"),
        categories=groups(CATEGORIES, lambda d, v: d["category"] == v),
        kinds=groups(KINDS, lambda d, v: d["kind"] == v),
        suppliers=groups(SUPPLIERS, lambda d, v: v in d["suppliers"]),
    )
    columns = Columns._build(None, read, (), ())
    for i, doc in enumerate(docs):
        doc["id"] = int(ids[i])
    return columns


filters = st.fixed_dictionaries(
    {
        "category_ids": st.none() | st.sets(st.sampled_from(CATEGORIES)),
        "supplier": st.none() | st.sampled_from((*SUPPLIERS, "org_unknown")),
        "kind": st.none() | st.sampled_from(KINDS),
        "min_price": st.none() | st.sampled_from(PRICES),
        "max_price": st.none() | st.sampled_from(PRICES),
        "phb_eligible": st.none() | st.booleans(),
        "in_stock": st.none() | st.booleans(),
    }
)


def passes(doc: dict, f: dict, facet: str | None) -> bool:
    """The reference: does ``doc`` pass every filter but ``facet``'s?"""
    checks = {
        "category": f["category_ids"] is None or doc["category"] in f["category_ids"],
        "supplier": f["supplier"] is None or f["supplier"] in doc["suppliers"],
        "kind": f["kind"] is None or doc["kind"] == f["kind"],
        "unit_price": (f["min_price"] is None or doc["price"] >= f["min_price"])
        and (f["max_price"] is None or doc["price"] <= f["max_price"]),
    }
    shared = (f["phb_eligible"] is None or doc["phb"] == f["phb_eligible"]) and (
        f["in_stock"] is None or doc["in_stock"] == f["in_stock"]
    )
    return shared and all(ok for name, ok in checks.items() if name != facet)


def tally(docs: list[dict], key) -> dict[str, int]:
    counts: dict[str, int] = {}
    for doc in docs:
        for value in key(doc):
            counts[value] = counts.get(value, 0) + 1
    return counts


@settings(max_examples=150, deadline=None)
@given(docs=documents, f=filters, matched=st.sets(st.integers(0, 24)))
def test_facet_counts_apply_every_filter_but_their_own(docs, f, matched):
    columns = columns_of(docs)
    chosen = [d for i, d in enumerate(docs) if i in matched]
    base = columns.positions(np.array([d["id"] for d in chosen], dtype=np.int64))
    counts = columns.facet_counts(base, columns.filters(**f))

    def reference(facet: str | None, key) -> dict[str, int]:
        return tally([d for d in chosen if passes(d, f, facet)], key)

    assert counts["total"] == {"": len([d for d in chosen if passes(d, f, None)])}
    assert counts["category"] == reference("category", lambda d: [d["category"]])
    assert counts["kind"] == reference("kind", lambda d: [d["kind"]])
    assert counts["unit_price"] == reference("unit_price", lambda d: [bucket_of(d["price"])])
    assert counts["supplier"] == reference("supplier", lambda d: sorted(d["suppliers"]))


@settings(max_examples=150, deadline=None)
@given(
    docs=documents,
    sort=st.sampled_from(["unit_price", "-unit_price", "newest"]),
    size=st.integers(1, 6),
)
def test_walking_the_pages_of_a_column_order_returns_the_sorted_documents_once(docs, sort, size):
    columns = columns_of(docs)
    key = "created" if sort == "newest" else "price"
    expected = sorted(
        ((d[key], d["tie_break"], d["id"]) for d in docs), reverse=sort != "unit_price"
    )
    walked, after = [], None
    everything = np.ones(len(columns), dtype=bool)
    while True:
        page = columns.page(everything, sort, after, size)
        walked.extend(page)
        if len(page) < size:
            break
        after = list(page[-1])
    assert walked == expected


def test_ids_not_held_are_left_out_of_the_positions():
    columns = columns_of(
        [
            {
                "category": "cat_a",
                "kind": KINDS[0],
                "price": 1,
                "in_stock": True,
                "phb": False,
                "tie_break": 0,
                "created": 0,
                "suppliers": {"org_x"},
            }
        ]
    )
    assert columns.positions(np.array([1000, 5, 2000], dtype=np.int64)).tolist() == [True]


# --- the change log -----------------------------------------------------------------------------


def bump(session_factory, ids, monkeypatch=None, slot=None, text=True):
    if slot is not None:
        monkeypatch.setattr(cache_module, "choose_slot", lambda: slot)
    with session_factory.begin() as session:
        bump_generation(session, ids, text_changed=text)


def generation(session_factory):
    with session_factory() as session:
        return read_generation(session)


def between(session_factory, held, seen):
    with session_factory() as session:
        return changes_between(session, held, seen)


def test_the_changes_between_two_generations_are_every_document_bumped_in_between(
    db, session_factory, monkeypatch
):
    start = generation(session_factory)
    bump(session_factory, [11, 12], monkeypatch, slot=3, text=False)
    middle = generation(session_factory)
    bump(session_factory, [13], monkeypatch, slot=3)  # the same slot: a chain of two
    later = generation(session_factory)
    bump(session_factory, [12, 14], monkeypatch, slot=9, text=False)
    end = generation(session_factory)
    assert between(session_factory, start, end) == Changes({11, 12, 13, 14}, text=True)
    assert between(session_factory, middle, end) == Changes({12, 13, 14}, text=True)
    # Only price or stock changes in between: the full-text index answers as before.
    assert between(session_factory, start, middle) == Changes({11, 12}, text=False)
    assert between(session_factory, later, end) == Changes({12, 14}, text=False)
    assert between(session_factory, end, end) == Changes(set(), text=False)


def test_a_bump_that_may_have_changed_anything_cannot_be_followed(db, session_factory, monkeypatch):
    start = generation(session_factory)
    bump(session_factory, None, monkeypatch, slot=2)  # as a full rebuild does
    assert between(session_factory, start, generation(session_factory)) is None


def test_a_missing_link_or_a_slot_gone_back_cannot_be_followed(db, session_factory, monkeypatch):
    start = generation(session_factory)
    bump(session_factory, [1], monkeypatch, slot=5)
    bump(session_factory, [2], monkeypatch, slot=5)
    end = generation(session_factory)
    assert between(session_factory, end, start) is None  # going back
    with session_factory.begin() as session:
        first = session.scalars(
            select(SearchChange).where(SearchChange.slot == 5).order_by(SearchChange.value)
        ).first()
        session.delete(first)
    assert between(session_factory, start, end) is None  # the first link was pruned
    with session_factory.begin() as session:
        session.execute(delete(cache_module.SearchGeneration))
    assert between(session_factory, end, generation(session_factory)) is None  # table emptied


def test_pruning_forgets_only_the_old_changes(db, session_factory, monkeypatch):
    bump(session_factory, [1], monkeypatch, slot=1)
    bump(session_factory, [2], monkeypatch, slot=1)
    with session_factory.begin() as session:
        oldest = session.scalars(select(SearchChange).order_by(SearchChange.value)).first()
        session.execute(
            update(SearchChange)
            .where(SearchChange.slot == oldest.slot, SearchChange.value == oldest.value)
            .values(created_at=utcnow() - CHANGES_KEPT - timedelta(minutes=1))
        )
    with session_factory.begin() as session:
        prune_changes(session)
    with session_factory() as session:
        assert [c.document_ids for c in session.scalars(select(SearchChange))] == ["2"]


# --- a process following the catalogue ----------------------------------------------------------


def decoded(columns: Columns) -> list[tuple]:
    """Each document's values, whatever codes the two snapshots gave categories and suppliers."""
    suppliers: dict[int, list[str]] = {}
    for position, code in zip(columns.pair_document, columns.pair_supplier, strict=True):
        suppliers.setdefault(int(position), []).append(columns.suppliers[code])
    return [
        (
            int(columns.ids[i]),
            columns.categories[columns.category[i]],
            KINDS[columns.kind[i]],
            int(columns.price[i]),
            int(columns.bucket[i]),
            bool(columns.in_stock[i]),
            bool(columns.phb[i]),
            int(columns.tie_break[i]),
            int(columns.created[i]),
            sorted(suppliers.get(i, [])),
        )
        for i in range(len(columns))
    ]


@pytest.mark.parametrize(
    "few",
    [columns_module.FEW_DOCUMENTS, 0],
    ids=["changed documents read as rows", "changed documents read as aggregates"],
)
def test_a_process_follows_each_change_by_reading_only_what_changed(
    app, cat, session_factory, monkeypatch, few
):
    monkeypatch.setattr(columns_module, "FEW_DOCUMENTS", few)
    acme, bolt = cat.supplier("Acme"), cat.supplier("Bolt")
    gauze = cat.product("Sterile gauze swab", "33141110", [(acme, 100)])
    foam = cat.product("Foam dressing 10cm", "33141110", [(acme, 900), (bolt, 950)])
    glove = cat.product("Nitrile gloves medium", "18424300", [(bolt, 650)])
    shared = get_backend(app)
    backend = SqlSearchBackend(shared.synonyms, shared.read_engine, cache_size=0)
    loads = []
    counting = []  # loads are counted only while the backend under test searches
    real_load = Columns.load.__func__

    def counted_load(cls, *args):
        if counting:
            loads.append(1)
        return real_load(cls, *args)

    monkeypatch.setattr(Columns, "load", classmethod(counted_load))

    def check(**query) -> None:
        with session_factory() as session:
            counting.append(1)
            result = backend.search(session, SearchQuery(**query))
            held = backend.columns.at(session, read_generation(session))
            counting.clear()
            fresh = real_load(Columns, session, None)
        assert decoded(held) == decoded(fresh)
        reference = SqlSearchBackend(shared.synonyms, shared.read_engine, cache_size=0)
        with session_factory() as session:
            expected = reference.search(session, SearchQuery(**query))
        assert (result.total, result.facets, [i.id for i in result.items]) == (
            expected.total,
            expected.facets,
            [i.id for i in expected.items],
        )

    check(q="dressing")
    assert len(loads) == 1
    cat.update_offer(foam, acme, pack_price_pence=40_000)  # another price bucket
    check(q="dressing", sort="unit_price")
    cat.update_offer(gauze, acme, status=OfferStatus.PAUSED)  # its only offer: document gone
    check(q="swab")
    cat.add_offer(glove, acme, 600)  # a supplier more
    check(q="gloves", supplier=acme.id)
    cat.product("Powered wheelchair", "33193121", [(cat.supplier("Carr"), 320_000)])  # new
    check(q="wheelchair", sort="newest")
    cat.update_product(glove, category_id=cat.categories["33141110"].id)  # recategorised
    check(category="33141110")
    assert len(loads) == 1  # the first search loaded; every change since was patched in


def test_a_price_change_shares_every_column_it_leaves_alone_with_the_snapshot_before(
    app, cat, session_factory
):
    """Following a change copies only the arrays it changes: a price change copies the price
    (and its bucket) and shares the rest, (document, supplier) pairs included; an offer from
    another supplier changes the pairs."""
    acme, bolt = cat.supplier("Acme"), cat.supplier("Bolt")
    foam = cat.product("Foam dressing 10cm", "33141110", [(acme, 900)])
    cat.product("Nitrile gloves medium", "18424300", [(bolt, 650)])
    store = SqlSearchBackend(get_backend(app).synonyms, cache_size=0).columns

    def columns() -> Columns:
        with session_factory() as session:
            return store.at(session, read_generation(session))

    before = columns()
    cat.update_offer(foam, acme, pack_price_pence=40_000)  # another price bucket
    after = columns()
    assert not np.array_equal(after.price, before.price)
    assert not np.array_equal(after.bucket, before.bucket)
    for name in ("category", "kind", "in_stock", "phb", "tie_break", "created"):
        assert getattr(after, name) is getattr(before, name), name
    assert after.pair_document is before.pair_document
    assert after.pair_supplier is before.pair_supplier
    cat.add_offer(foam, bolt, 41_000)
    more = columns()
    assert len(more.pair_document) == len(after.pair_document) + 1
    assert more.price is after.price  # the best offer is still Acme's


def test_a_worker_loads_the_columns_before_its_first_search(app, cat, session_factory, monkeypatch):
    cat.product("Foam dressing 10cm", "33141110", [(cat.supplier("Acme"), 900)])
    backend = get_backend(app)
    if backend.read_engine is None:  # an in-memory database: warm through the app's engine
        monkeypatch.setattr(backend, "read_engine", session_factory.kw["bind"])
    warm_up(app)
    loads = []
    real_load = Columns.load.__func__
    monkeypatch.setattr(
        Columns, "load", classmethod(lambda cls, *a: loads.append(1) or real_load(cls, *a))
    )
    assert search(app.test_client(), q="dressing")["total"] == 1
    assert loads == []


def test_a_warm_up_that_cannot_reach_the_database_leaves_it_to_the_first_search(
    app, monkeypatch, caplog
):
    def unreachable():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(get_backend(app), "warm", unreachable)
    warm_up(app)  # does not raise: the worker starts, and its first search loads them
    assert "search warm-up skipped" in caplog.text


def test_a_forged_cursor_beyond_any_key_gives_an_empty_page_not_an_error(app, cat):
    cat.product("Foam dressing 10cm", "33141110", [(cat.supplier("Acme"), 900)])
    top, bottom = 2**63 - 1, -(2**63)
    for sort, key in (("unit_price", [top, top, top]), ("-unit_price", [bottom, bottom, 0])):
        query = SearchQuery(q="dressing", sort=sort)
        body = search(app.test_client(), q="dressing", sort=sort, cursor=encode_cursor(query, key))
        assert body["items"] == []
        assert body["next_cursor"] is None
        assert body["total"] == 1  # the facets and total do not depend on the cursor


@pytest.mark.parametrize("q", [None, "dressing"])
def test_a_forged_cursor_key_wider_than_64_bits_is_refused(app, cat, q):
    cat.product("Foam dressing 10cm", "33141110", [(cat.supplier("Acme"), 900)])
    cursor = encode_cursor(SearchQuery(q=q, sort="unit_price"), [10**30, 0, 0])
    response = app.test_client().get(
        "/api/v1/search",
        query_string={"sort": "unit_price", "cursor": cursor, **({"q": q} if q else {})},
    )
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert "cursor" in response.get_json()["errors"]
