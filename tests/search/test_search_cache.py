"""The SQL backend's request cache and the search generation that validates it: a repeated
search is answered from the cache, and no write that changes what a search returns is ever
followed by a stale answer (through the HTTP API, and with concurrent writers and readers).
Runs on SQLite and, with MARKETPLACE_TEST_DATABASE_URL, on PostgreSQL."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError

from marketplace.accounts.models import Role
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Offer, OfferStatus
from marketplace.catalog.search import cache as cache_module
from marketplace.catalog.search import get_backend
from marketplace.catalog.search import sql as sql_module
from marketplace.catalog.search.base import SearchQuery
from marketplace.catalog.search.cache import SearchCache, read_generation
from marketplace.catalog.search.outbox import product_changed
from marketplace.catalog.search.sql import SqlSearchBackend
from tests.search.conftest import search
from tests.support import metric

LOOKUPS = "marketplace_search_cache_lookups_total"


def lookups(outcome: str) -> float:
    return sum(metric(LOOKUPS, part=part, outcome=outcome) for part in ("facets", "page"))


def uncached(app, **params) -> dict:
    """The same search with the cache off (the ground truth), through the same serialisation."""
    backend = get_backend(app)
    fresh = SqlSearchBackend(backend.synonyms, backend.read_engine, cache_size=0)
    app.extensions["marketplace.search"] = fresh
    try:
        return search(app.test_client(), **params)
    finally:
        app.extensions["marketplace.search"] = backend


def counts(body, facet: str, key: str) -> dict:
    return {entry[key]: entry["count"] for entry in body["facets"][facet]}


@pytest.fixture
def supplier(factory):
    return factory.actor(Role.SUPPLIER)


@pytest.fixture
def gloves(cat, client, supplier):
    """Three glove products listed by one supplier through the API, and their offers."""
    cat.load_categories()
    offers = {}
    for name, price, stock in [
        ("Nitrile examination gloves, small", 600, 10),
        ("Nitrile examination gloves, medium", 650, 10),
        ("Vinyl examination gloves, large", 420, 3),
    ]:
        product = client.post(
            "/api/v1/products",
            json={"name": name, "category_code": "18424300", "units_per_pack": 100},
            headers=supplier.headers,
        )
        assert product.status_code == 201, product.get_json()
        offer = client.post(
            "/api/v1/offers",
            json={
                "product_id": product.get_json()["id"],
                "pack_price_pence": price,
                "vat_rate_percent": 20,
                "stock": stock,
            },
            headers=supplier.headers,
        )
        assert offer.status_code == 201, offer.get_json()
        offers[name.split(",")[1].strip()] = offer.get_json()
    return offers


def patch_offer(client, supplier, offer, **changes) -> None:
    response = client.patch(f"/api/v1/offers/{offer['id']}", json=changes, headers=supplier.headers)
    assert response.status_code == 200, response.get_json()


# --- hits ------------------------------------------------------------------------------------


def test_a_repeated_search_is_answered_from_the_cache(app, client, gloves):
    first = search(client, q="gloves")
    hits = lookups("hit")
    misses = lookups("miss")
    again = search(client, q="gloves")
    assert again == first
    assert lookups("hit") == hits + 2  # the facets and the page
    assert lookups("miss") == misses
    assert first["total"] == 3
    assert first == uncached(app, q="gloves")


def test_pages_of_other_sorts_share_the_cached_facets(client, gloves):
    search(client, q="gloves")
    hits = metric(LOOKUPS, part="facets", outcome="hit")
    page_misses = metric(LOOKUPS, part="page", outcome="miss")
    body = search(client, q="gloves", sort="unit_price")
    assert metric(LOOKUPS, part="facets", outcome="hit") == hits + 1
    assert metric(LOOKUPS, part="page", outcome="miss") == page_misses + 1
    assert [i["best_offer"]["pack_price_pence"] for i in body["items"]] == [420, 600, 650]


def test_with_the_cache_off_nothing_is_looked_up(app, gloves):
    before = lookups("hit") + lookups("miss")
    for _ in range(2):
        assert uncached(app, q="gloves")["total"] == 3
    assert lookups("hit") + lookups("miss") == before


# --- never stale: each write through the API, then the same searches -------------------------


def test_a_price_change_is_seen_at_once(app, client, supplier, gloves):
    assert search(client, q="gloves", sort="unit_price")["items"][0]["name"].startswith("Vinyl")
    assert search(client, q="gloves", max_unit_price="3")["total"] == 0
    patch_offer(client, supplier, gloves["small"], pack_price_pence=300)  # 3p a glove
    body = search(client, q="gloves", sort="unit_price")
    assert body["items"][0]["name"] == "Nitrile examination gloves, small"
    assert body["items"][0]["best_offer"]["pack_price_pence"] == 300
    filtered = search(client, q="gloves", max_unit_price="3")
    assert [i["name"] for i in filtered["items"]] == ["Nitrile examination gloves, small"]
    assert filtered["total"] == 1
    assert body == uncached(app, q="gloves", sort="unit_price")


def test_a_price_bucket_change_moves_the_facet_count(app, client, supplier, gloves):
    assert counts(search(client, q="gloves"), "unit_price", "key")["under-10p"] == 3
    patch_offer(client, supplier, gloves["medium"], pack_price_pence=65000)  # £6.50 each
    body = search(client, q="gloves")
    assert counts(body, "unit_price", "key")["under-10p"] == 2
    assert counts(body, "unit_price", "key")["1-10"] == 1
    assert body == uncached(app, q="gloves")


def test_running_out_of_stock_is_seen_at_once(app, client, supplier, gloves):
    assert search(client, q="gloves", in_stock="true")["total"] == 3
    assert search(client, in_stock="false")["total"] == 0
    patch_offer(client, supplier, gloves["large"], stock=0)
    assert search(client, q="gloves", in_stock="true")["total"] == 2
    assert search(client, in_stock="false")["total"] == 1
    body = search(client, q="gloves")
    assert {i["name"]: i["in_stock"] for i in body["items"]}[
        "Vinyl examination gloves, large"
    ] is False
    patch_offer(client, supplier, gloves["large"], stock=7)
    assert search(client, q="gloves", in_stock="true")["total"] == 3
    assert body != search(client, q="gloves")


def test_a_stock_change_that_stays_in_stock_keeps_the_cache(client, supplier, gloves, db):
    search(client, q="gloves")
    generation = read_generation(db)
    db.rollback()
    patch_offer(client, supplier, gloves["small"], stock=4)
    assert read_generation(db) == generation
    hits = lookups("hit")
    assert search(client, q="gloves")["total"] == 3
    assert lookups("hit") == hits + 2


def test_pausing_an_offer_is_seen_at_once(app, client, supplier, gloves):
    assert search(client, q="nitrile")["total"] == 2
    browse = search(client, category="18424300")
    assert browse["total"] == 3
    patch_offer(client, supplier, gloves["medium"], status="paused")
    body = search(client, q="nitrile")
    assert body["total"] == 1
    assert [i["name"] for i in body["items"]] == ["Nitrile examination gloves, small"]
    assert counts(body, "supplier", "id") == {gloves["small"]["supplier"]["id"]: 1}
    browse = search(client, category="18424300")
    assert browse["total"] == 2
    assert counts(browse, "kind", "value") == {"commodity": 2}
    patch_offer(client, supplier, gloves["medium"], status="active")
    assert search(client, q="nitrile")["total"] == 2
    assert browse != search(client, category="18424300")


def test_a_new_product_and_offer_are_seen_at_once(app, client, factory, supplier, gloves):
    before = search(client, q="gloves")
    assert before["total"] == 3
    other = factory.actor(Role.SUPPLIER)
    product = client.post(
        "/api/v1/products",
        json={
            "name": "Latex examination gloves",
            "category_code": "18424300",
            "units_per_pack": 50,
        },
        headers=other.headers,
    ).get_json()
    client.post(
        "/api/v1/offers",
        json={
            "product_id": product["id"],
            "pack_price_pence": 900,
            "vat_rate_percent": 20,
            "stock": 5,
        },
        headers=other.headers,
    )
    body = search(client, q="gloves")
    assert body["total"] == 4
    assert product["id"] in [i["id"] for i in body["items"]]
    assert counts(body, "supplier", "id") == {supplier.org.id: 3, other.org.id: 1}
    # A second supplier's offer on an existing product: the supplier facet and filter follow.
    small = gloves["small"]["product_id"]
    client.post(
        "/api/v1/offers",
        json={"product_id": small, "pack_price_pence": 500, "vat_rate_percent": 20, "stock": 1},
        headers=other.headers,
    )
    body = search(client, q="gloves")
    assert counts(body, "supplier", "id") == {supplier.org.id: 3, other.org.id: 2}
    assert small in [i["id"] for i in search(client, q="gloves", supplier=other.org.id)["items"]]
    assert body == uncached(app, q="gloves")


def test_a_renamed_product_is_seen_at_once(client, supplier, gloves):
    assert search(client, q="vinyl")["total"] == 1
    response = client.patch(
        f"/api/v1/products/{gloves['large']['product_id']}",
        json={"name": "Polythene gloves, large"},
        headers=supplier.headers,
    )
    assert response.status_code == 200, response.get_json()
    assert search(client, q="vinyl")["total"] == 0
    assert search(client, q="polythene")["total"] == 1


def test_a_renamed_supplier_is_shown_at_once_from_a_cached_search(client, db, supplier, gloves):
    search(client, q="gloves")
    db.get(type(supplier.org), supplier.org.id).name = "Renamed Gloves Ltd"
    db.commit()
    hits = lookups("hit")
    body = search(client, q="gloves")
    assert lookups("hit") == hits + 2  # nothing in the documents changed
    assert {i["best_offer"]["supplier"]["name"] for i in body["items"]} == {"Renamed Gloves Ltd"}
    assert [f["name"] for f in body["facets"]["supplier"]] == ["Renamed Gloves Ltd"]


# --- pagination ---------------------------------------------------------------------------------


def walk(client, **params) -> list[str]:
    seen, cursor = [], None
    while True:
        body = search(client, **params, limit=3, **({"cursor": cursor} if cursor else {}))
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            return seen


@pytest.mark.parametrize("sort", ["relevance", "unit_price", "newest"])
def test_walking_the_pages_from_the_cache_returns_every_match_once(cat, client, sort):
    s = cat.supplier("Acme")
    made = {cat.product(f"Foam dressing {n} cm", "33141110", [(s, 100 + n % 4)]) for n in range(11)}
    first = walk(client, q="foam dressing", sort=sort)
    hits = lookups("hit")
    second = walk(client, q="foam dressing", sort=sort)
    assert lookups("hit") == hits + 2 * 4  # 4 pages of 3, each its page and its facets
    assert second == first
    assert len(first) == 11
    assert set(first) == made


# --- the generation -----------------------------------------------------------------------------


def changed_slots(before, after) -> set[int]:
    old, new = dict(before), dict(after)
    return {slot for slot in set(old) | set(new) if old.get(slot) != new.get(slot)}


def test_the_generation_moves_only_when_a_document_changes(cat, session_factory, db):
    s = cat.supplier("Acme")
    product = cat.product("Alginate dressing 5cm", "33141110", [(s, 300, 10)])
    with session_factory() as session:
        offer = session.scalar(select(Offer.id).where(Offer.product_id == product))

    def generation():
        db.rollback()
        return read_generation(db)

    start = generation()
    with session_factory.begin() as session:
        catalog.reserve_stock(session, offer, 3)  # 10 -> 7: still in stock
    assert generation() == start
    cat.update_offer(product, s, pack_price_pence=300)  # the same price
    assert generation() == start
    with session_factory.begin() as session:
        catalog.reserve_stock(session, offer, 7)  # 7 -> 0: out of stock
    out_of_stock = generation()
    assert len(changed_slots(start, out_of_stock)) == 1
    cat.update_offer(product, s, pack_price_pence=320)
    assert generation() != out_of_stock


def test_one_transaction_bumps_one_slot_and_a_rollback_none(cat, session_factory, db):
    s = cat.supplier("Acme")
    products = [cat.product(f"Hydrocolloid dressing {n}", "33141110", [(s, 200)]) for n in range(3)]
    db.rollback()
    start = read_generation(db)
    with session_factory.begin() as session:
        for n, product_id in enumerate(products):
            offer = session.scalar(select(Offer).where(Offer.product_id == product_id))
            offer.pack_price_pence = 250 + n
            session.flush()
            product_changed(session, product_id)
    db.rollback()
    after = read_generation(db)
    assert len(changed_slots(start, after)) == 1
    session = session_factory()
    offer = session.scalar(select(Offer).where(Offer.product_id == products[0]))
    offer.pack_price_pence = 999
    session.flush()
    product_changed(session, products[0])
    session.rollback()
    session.close()
    db.rollback()
    assert read_generation(db) == after


def test_a_search_inside_a_writing_transaction_bypasses_the_cache(app, cat, session_factory):
    s = cat.supplier("Acme")
    product = cat.product("Silicone dressing 10cm", "33141110", [(s, 500)])
    backend = SqlSearchBackend(get_backend(app).synonyms, cache_size=16)
    query = SearchQuery(q="silicone")
    with session_factory() as session:
        assert backend.search(session, query).total == 1
        # The page and the facets; in one snapshot (not PostgreSQL's READ COMMITTED, which this
        # session has there) also the plan and the ranked matches.
        kept = 4 if sql_module._one_snapshot(session) else 2
        assert len(backend.cache) == kept
        offer = session.scalar(select(Offer).where(Offer.product_id == product))
        offer.status = OfferStatus.PAUSED
        session.flush()
        product_changed(session, product)
        # Its own uncommitted change is seen, and not filed in the cache.
        assert backend.search(session, query).total == 0
        assert len(backend.cache) == kept
        session.rollback()
        assert backend.search(session, query).total == 1


# --- concurrency --------------------------------------------------------------------------------


def test_a_write_between_the_generation_read_and_the_search_is_never_served_stale(
    app, cat, session_factory, monkeypatch
):
    """A writer commits right after a search read the generation: whatever that search
    computed and cached, the next search must show the write (in its total, which is cached,
    not only in its items, which are read afresh)."""
    s = cat.supplier("Acme")
    product = cat.product("Sterile gauze swab", "33141110", [(s, 100)])
    backend = get_backend(app)
    query = SearchQuery(q="gauze", max_unit_price=Decimal(120))
    real = sql_module.read_generation
    wrote = []

    def read_then_write(session):
        generation = real(session)
        if not wrote:
            wrote.append(True)
            cat.update_offer(product, s, pack_price_pence=150)
        return generation

    monkeypatch.setattr(sql_module, "read_generation", read_then_write)
    with session_factory() as session:
        backend.search(session, query)
    with session_factory() as session:
        result = backend.search(session, query)
    assert wrote
    assert result.total == 0
    assert result.items == []


def test_concurrent_writers_and_readers_never_see_a_stale_answer(app, cat, session_factory):
    """Writers change a price upwards and add products; readers search all the while. Each
    reader notes what was committed before it started: its answer may be newer, never older.
    Readers repeat their search, so some answers come from the cache."""
    s = cat.supplier("Acme")
    watched = cat.product("Zeta widget", "33141110", [(s, 1000)])
    backend = get_backend(app)
    committed = {"price": 1000, "total": 1}
    lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()
    hits_before = lookups("hit")

    def writer() -> None:
        try:
            for n in range(1, 31):
                cat.update_offer(watched, s, pack_price_pence=1000 + n)
                with lock:
                    committed["price"] = 1000 + n
                if n % 3 == 0:
                    cat.product(f"Widget spare {n}", "33141110", [(s, 5000)])
                    with lock:
                        committed["total"] += 1
                time.sleep(0.01)
        except Exception as error:  # surfaced below, not lost in the thread
            failures.append(f"writer: {error!r}")
        finally:
            stop.set()

    def check(price: int, total: int) -> None:
        with session_factory() as session:
            result = backend.search(session, SearchQuery(q="widget", sort="unit_price", limit=100))
        seen = {i.id: i.best_offer.pack_price_pence for i in result.items}
        if seen.get(watched, 0) < price or result.total < total:
            failures.append(f"stale: {seen.get(watched)} < {price} or {result.total} < {total}")
        # Page, total and facets come from one snapshot, cached or not.
        kinds = sum(f.count for f in result.facets.kind)
        if not kinds == len(seen) == result.total:
            failures.append(f"{kinds} in the facets, {len(seen)} items, total {result.total}")

    def reader() -> None:
        try:
            while not stop.is_set() and not failures:
                with lock:
                    price, total = committed["price"], committed["total"]
                check(price, total)
                check(price, total)
        except Exception as error:
            failures.append(f"reader: {error!r}")

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures[:5]
    assert lookups("hit") > hits_before  # the cache answered some of them
    with session_factory() as session:
        final = backend.search(session, SearchQuery(q="widget", sort="unit_price", limit=100))
    assert final.total == 11
    assert next(i for i in final.items if i.id == watched).best_offer.pack_price_pence == 1030


def change_price(session, product_id: str, price: int) -> None:
    offer = session.scalar(select(Offer).where(Offer.product_id == product_id))
    offer.pack_price_pence = price
    session.flush()
    product_changed(session, product_id)


@pytest.mark.postgres
@pytest.mark.parametrize(("slots", "waits"), [((3, 7), False), ((5, 5), True)])
def test_writers_on_different_slots_do_not_wait_for_each_other(
    cat, session_factory, settings, monkeypatch, slots, waits
):
    if not settings.is_postgresql:
        pytest.skip("row locks are PostgreSQL's: set MARKETPLACE_TEST_DATABASE_URL")
    s = cat.supplier("Acme")
    a = cat.product("Foam dressing A", "33141110", [(s, 100)])
    b = cat.product("Foam dressing B", "33141110", [(s, 100)])
    chosen = iter(slots)
    monkeypatch.setattr(cache_module, "choose_slot", lambda: next(chosen))
    first, second = session_factory(), session_factory()
    try:
        change_price(first, a, 110)  # holds its slot's row lock until it commits
        second.execute(text("SET LOCAL lock_timeout = '500ms'"))
        if waits:
            with pytest.raises(OperationalError, match="lock"):
                change_price(second, b, 120)
        else:
            change_price(second, b, 120)
            second.commit()
        first.commit()
    finally:
        second.rollback()
        second.close()
        first.close()


# --- the cache itself ---------------------------------------------------------------------------


def test_the_cache_is_a_bounded_lru_checked_against_the_generation():
    cache = SearchCache(size=2)
    computed = []

    def value(v):
        def compute():
            computed.append(v)
            return v

        return compute

    g1, g2 = ((0, 1),), ((0, 2),)
    assert cache.lookup("page", "a", g1, value("a1")) == "a1"
    assert cache.lookup("page", "b", g1, value("b1")) == "b1"
    assert cache.lookup("page", "a", g1, value("never")) == "a1"  # a is now the most recent
    assert cache.lookup("page", "c", g1, value("c1")) == "c1"  # evicts b
    assert len(cache) == 2
    assert cache.lookup("page", "b", g1, value("b2")) == "b2"
    assert cache.lookup("page", "c", g2, value("c2")) == "c2"  # another generation: computed
    assert cache.lookup("facets", "c", g2, value("c3")) == "c3"  # parts never share entries
    assert cache.lookup("page", "x", None, value("x1")) == "x1"  # not cacheable
    assert cache.lookup("page", "x", None, value("x2")) == "x2"
    assert computed == ["a1", "b1", "c1", "b2", "c2", "c3", "x1", "x2"]
    assert len(cache) == 2


def test_a_cache_of_size_zero_stores_nothing():
    cache = SearchCache(size=0)
    assert not cache.enabled
    assert cache.lookup("page", "a", None, lambda: 1) == 1
    assert len(cache) == 0
