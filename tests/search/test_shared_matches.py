"""Full-text matches shared between processes through Redis, filed under the text version: a
second process (a worker that just started, or any worker after a text change) takes a query's
matches from the first instead of asking the full-text index again; a text change moves the
text version, so nothing stale is ever taken; and Redis failing only costs the sharing."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import replace

import numpy as np
import pytest
import redis
from sqlalchemy import delete, select, update

from marketplace.catalog.models import Product
from marketplace.catalog.search import get_backend, make_backend
from marketplace.catalog.search.base import SearchQuery
from marketplace.catalog.search.cache import bump_generation, read_text_version
from marketplace.catalog.search.documents import refresh_documents
from marketplace.catalog.search.models import SearchDocument, SearchGeneration
from marketplace.catalog.search.shared import SharedMatches, decode, encode, version_digest
from marketplace.catalog.search.sql import SqlSearchBackend
from tests.search.test_kept_matches import full_text_queries, full_text_work

REDIS_URL_ENV = "MARKETPLACE_TEST_REDIS_URL"


class MemoryRedis:
    """The two Redis commands the shared matches use, in memory, with the calls counted."""

    def __init__(self):
        self.values: dict[str, bytes] = {}
        self.calls: list[str] = []

    def get(self, key):
        self.calls.append("get")
        return self.values.get(key)

    def set(self, key, value, ex=None):
        assert ex
        assert ex > 0
        self.calls.append("set")
        self.values[key] = value


class DownRedis:
    def __init__(self):
        self.calls = 0

    def get(self, key):
        self.calls += 1
        raise redis.ConnectionError("Connection refused")

    set = get


@pytest.fixture
def store():
    return MemoryRedis()


def worker(app, shared: SharedMatches) -> SqlSearchBackend:
    """A backend as a new worker process has it: nothing kept yet, the shared matches."""
    own = get_backend(app)
    return SqlSearchBackend(own.synonyms, own.read_engine, cache_size=64, shared=shared)


def search(backend, session_factory, seen, **params):
    """The answer, and how many full-text queries it took."""
    before = full_text_queries(seen)
    with session_factory() as session:
        result = backend.search(session, SearchQuery(**params))
    return result, full_text_queries(seen) - before


@pytest.fixture
def dressings(cat):
    acme = cat.supplier("Acme")
    foam = cat.product("Foam dressing 10cm", "33141110", [(acme, 900)])
    cat.product("Gauze dressing pad", "33141110", [(acme, 300)])
    gloves = cat.product("Nitrile gloves", "18424300", [(acme, 650)])
    cat.product("Silicone dressing", "33141110", [(acme, 500)])
    return acme, foam, gloves


def test_a_second_worker_takes_the_matches_the_first_filed(
    app, cat, dressings, session_factory, store
):
    acme, foam, gloves = dressings
    shared = SharedMatches(store, prefix=f"test-{uuid.uuid4().hex}")
    engine = get_backend(app).read_engine or session_factory.kw["bind"]
    with full_text_work(engine) as seen:
        first, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 1
        assert store.calls == ["get", "set"]
        second, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 0
        assert store.calls[2:] == ["get"]
        assert (second.total, second.items, second.facets) == (
            first.total,
            first.items,
            first.facets,
        )
        # unranked matches (another order) are filed apart from the ranked ones
        _, asked = search(worker(app, shared), session_factory, seen, q="dressing", sort="newest")
        assert asked == 1

        # A price change leaves the text version, and so the shared matches, as they were;
        # the page shows the new price (never cached across a generation).
        cat.update_offer(foam, acme, pack_price_pence=100)
        by_price, asked = search(
            worker(app, shared), session_factory, seen, q="dressing", sort="unit_price"
        )
        assert asked == 0
        assert (by_price.items[0].id, by_price.items[0].best_offer.pack_price_pence) == (foam, 100)

        # A text change moves the text version: the next worker asks the index again.
        cat.update_product(gloves, name="Nitrile gloves for dressing changes")
        renamed, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 1
        assert gloves in {item.id for item in renamed.items}
        assert renamed.total == first.total + 1
        _, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 0
    assert len(store.values) == 2  # one entry per query and order, overwritten, whatever changed


def test_the_text_version_moves_only_with_text(session_factory):
    def version():
        with session_factory() as session:
            return read_text_version(session)

    def bump(ids, text_changed):
        with session_factory.begin() as session:
            bump_generation(session, ids, text_changed=text_changed)

    assert version() is None  # no text change recorded: nothing to vouch for the text
    bump([1], text_changed=False)
    assert version() is None
    bump([1], text_changed=True)
    start = version()
    assert start is not None
    for _ in range(3):  # each transaction picks a slot at random: try several
        bump([1], text_changed=False)
        assert version() == start
    bump([2], text_changed=True)
    moved = version()
    assert moved != start
    bump(None, text_changed=False)  # a full rebuild may change any text
    assert version() not in (start, moved, None)
    with session_factory.begin() as session:  # the generations emptied (or restored)
        session.execute(delete(SearchGeneration))
    assert version() is None


def test_a_text_change_by_an_older_release_stops_the_sharing(
    app, cat, dressings, session_factory, store
):
    """During a rolling deploy a worker of the release before text versions bumps a slot and
    records its text change without moving the slot's text value: the text version cannot
    vouch for the text, so nothing is shared until a text change of this release moves it."""
    acme, foam, gloves = dressings
    shared = SharedMatches(store, prefix=f"test-{uuid.uuid4().hex}")
    engine = get_backend(app).read_engine or session_factory.kw["bind"]
    with full_text_work(engine) as seen:
        first, _ = search(worker(app, shared), session_factory, seen, q="dressing")
        with session_factory.begin() as session:  # the older release's rename, bump and log
            before = dict(
                session.execute(select(SearchGeneration.slot, SearchGeneration.text_value)).all()
            )
            session.execute(
                update(Product).where(Product.id == gloves).values(name="Nitrile dressing gloves")
            )
            refresh_documents(session, [gloves])
            for slot, text_value in before.items():  # as if it had kept no text values
                session.execute(
                    update(SearchGeneration)
                    .where(SearchGeneration.slot == slot)
                    .values(text_value=text_value)
                )
            session.execute(
                update(SearchGeneration)
                .where(SearchGeneration.slot.not_in(list(before)))
                .values(text_value=0)
            )
        with session_factory() as session:
            assert read_text_version(session) is None
        calls = len(store.calls)
        renamed, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 1
        assert store.calls[calls:] == []
        assert renamed.total == first.total + 1
        cat.update_offer(foam, acme, pack_price_pence=123)  # a price change: still not shared
        _, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 1
        assert store.calls[calls:] == []
        # Sharing resumes once this release's text changes have moved every slot's text value
        # past the older release's bumps (each moves the slot it bumps; here all at once).
        with session_factory.begin() as session:
            session.execute(update(SearchGeneration).values(text_value=SearchGeneration.value))
        _, asked = search(worker(app, shared), session_factory, seen, q="dressing")
        assert asked == 1
        assert store.calls[calls:] == ["get", "set"]


def test_a_read_committed_search_shares_nothing(
    app, dressings, session_factory, store, is_postgres
):
    """On PostgreSQL each statement of a READ COMMITTED session sees its own snapshot: the text
    version it reads may not be the text its full-text query sees."""
    if not is_postgres:
        pytest.skip("READ COMMITTED is PostgreSQL's: set MARKETPLACE_TEST_DATABASE_URL")
    backend = worker(app, SharedMatches(store, prefix=f"test-{uuid.uuid4().hex}"))
    with session_factory() as session:
        result = backend._search(session, SearchQuery(q="dressing"))
    assert result.total == 3
    assert store.calls == []


def test_a_search_that_sees_its_own_changes_shares_nothing(app, dressings, session_factory, store):
    """A search inside a transaction that changed documents sees uncommitted text: it neither
    takes nor files shared matches (nor keeps any)."""
    _acme, foam, _gloves = dressings
    backend = worker(app, SharedMatches(store, prefix=f"test-{uuid.uuid4().hex}"))
    with session_factory() as session:
        document = session.scalar(select(SearchDocument).where(SearchDocument.product_id == foam))
        bump_generation(session, [document.id], text_changed=True)
        result = backend._search(session, SearchQuery(q="dressing"))
        session.rollback()
    assert result.total == 3
    assert store.calls == []


def test_without_redis_searches_go_on_and_it_is_not_asked_again_at_once(
    app, dressings, session_factory, caplog
):
    down = DownRedis()
    shared = SharedMatches(down, prefix="test")
    with caplog.at_level(logging.WARNING, logger="marketplace.catalog.search.shared"):
        for word in ("dressing", "gloves", "foam"):
            with session_factory() as session:
                result = worker(app, shared).search(session, SearchQuery(q=word))
            assert result.total >= 1
    assert down.calls == 1  # then no attempt for the back-off period
    warnings = [r.getMessage() for r in caplog.records if r.name.endswith(".shared")]
    assert [w.split(",")[0] for w in warnings] == ["shared search matches unavailable"]


def test_an_unreadable_entry_is_a_miss(app, dressings, session_factory, store, caplog):
    shared = SharedMatches(store, prefix=f"test-{uuid.uuid4().hex}")
    with session_factory() as session:
        expected = worker(app, shared).search(session, SearchQuery(q="dressing"))
    (key,) = store.values
    for damaged in (store.values[key][:-3], "text, as a client decoding responses returns"):
        store.values[key] = damaged
        with caplog.at_level(logging.WARNING), session_factory() as session:
            again = worker(app, shared).search(session, SearchQuery(q="dressing"))
        assert again.items == expected.items
        assert "unreadable" in caplog.text
        assert decode(store.values[key])  # filed again, whole


def test_values_round_trip():
    version = ((3, 17), (9, 2**40))
    ids = np.array([3, 1, 2**40], dtype=np.int64)
    scores = np.array([0.5, -1.25, 1e-300])
    digest, back_ids, back_scores = decode(encode(version, ids, scores))
    assert digest == version_digest(version)
    assert digest != version_digest(((3, 18), (9, 2**40)))
    assert back_ids.tolist() == ids.tolist()
    assert back_scores.tolist() == scores.tolist()
    assert decode(encode(version, ids, None))[2] is None
    assert decode(encode(version, np.empty(0, dtype=np.int64), None))[1].tolist() == []
    with pytest.raises(ValueError, match="expected"):
        decode(encode(version, ids, scores)[:-1])


def test_another_version_s_entry_is_a_miss_and_oversized_answers_are_not_filed(monkeypatch):
    store = MemoryRedis()
    shared = SharedMatches(store, prefix="p")
    ids, scores = np.arange(4, dtype=np.int64), np.ones(4)
    shared.put("k", ((0, 5),), ids, scores)
    assert shared.get("k", ((0, 6),)) is None
    assert shared.get("k", ((0, 5),))[0].tolist() == [0, 1, 2, 3]
    monkeypatch.setattr("marketplace.catalog.search.shared.MAX_VALUE_BYTES", 100)
    shared.put("big", ((0, 5),), ids, scores)  # 64 bytes of matches and the header: too big
    assert "big" not in store.values


def test_keys_differ_by_plan_order_and_database(app, session_factory):
    backend = get_backend(app)
    shared = SharedMatches(MemoryRedis(), prefix="p")
    with session_factory() as session:
        dressing = backend._plan(session, SearchQuery(q="dressing"))
        gloves = backend._plan(session, SearchQuery(q="gloves"))
    keys = {
        shared.key("sqlite", dressing, True),
        shared.key("sqlite", gloves, True),
        shared.key("sqlite", dressing, False),
        shared.key("postgresql", dressing, True),
    }
    assert len(keys) == 4
    assert all(key.startswith("p:search-matches:") for key in keys)
    assert shared.key("sqlite", dressing, True) == SharedMatches(None, prefix="p").key(
        "sqlite", dressing, True
    )  # the same in every process


def test_redis_url_shares_matches_between_workers_through_redis(
    app, settings, dressings, session_factory
):
    url = os.environ.get(REDIS_URL_ENV)
    if not url:
        pytest.skip(f"{REDIS_URL_ENV} is not set: this test needs a Redis server")
    prefix = f"test-{uuid.uuid4().hex}"
    configured = replace(settings, redis_url=url, rate_limit_key_prefix=prefix)
    own = get_backend(app)
    workers = [
        make_backend(configured, read_engine=own.read_engine, synonyms=own.synonyms)
        for _ in range(2)
    ]
    assert all(isinstance(w.shared, SharedMatches) for w in workers)
    client = workers[0].shared.client
    try:
        engine = own.read_engine or session_factory.kw["bind"]
        with full_text_work(engine) as seen:
            first, asked = search(workers[0], session_factory, seen, q="dressing")
            assert asked == 1
            second, asked = search(workers[1], session_factory, seen, q="dressing")
            assert asked == 0
            assert second.items == first.items
        keys = client.keys(f"{prefix}:search-matches:*")
        assert len(keys) == 1
        assert 0 < client.ttl(keys[0]) <= 3600
    finally:
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)
