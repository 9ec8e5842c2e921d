"""The public change feed: catalogue, price and award changes, in a commit-safe order, so that a
crawler following ``next_cursor`` never misses or repeats an entry, even while writers commit
out of order."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from marketplace.catalog import service as catalog
from marketplace.db import unit_of_work, utcnow
from marketplace.transparency.models import ChangeEntry
from tests.support import SYSTEM, assert_problem


def crawl(client, cursor: str | None = None, *, limit: int = 100) -> tuple[list[dict], str]:
    """Follow the feed until it has nothing more ready now."""
    items: list[dict] = []
    while True:
        url = f"/api/v1/changes?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = client.get(url)
        assert response.status_code == 200, response.get_data(as_text=True)
        page = response.get_json()
        items.extend(page["items"])
        assert page["next_cursor"]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return items, cursor


def test_catalogue_changes_become_entries(world, client):
    product = world.product(name="Nitrile examination gloves, medium", category_code="18424300")
    offer = world.offer(world.sme, product, 899, stock=10)
    with world.session_factory.begin() as session:
        catalog.update_offer(session, world.sme.principal, offer.id, {"pack_price_pence": 849})
    with world.session_factory.begin() as session:
        catalog.update_offer(session, world.sme.principal, offer.id, {"stock": 3})  # not public
    with world.session_factory.begin() as session:
        catalog.update_offer(session, world.sme.principal, offer.id, {"status": "paused"})
    with world.session_factory.begin() as session:
        catalog.update_product(session, SYSTEM, product.id, {"name": "Nitrile gloves, medium"})

    items, _ = crawl(client)
    kinds = [(i["kind"], i["object_id"]) for i in items]
    assert kinds == [
        ("product.created", product.id),
        ("offer.created", offer.id),
        ("offer.price_changed", offer.id),
        ("offer.price_changed", offer.id),
        ("offer.updated", offer.id),
        ("product.updated", product.id),
    ]
    created, _, first_price, second_price, paused, renamed = items
    assert created["data"]["category_code"] == "18424300"
    assert created["href"].endswith(f"/api/v1/products/{product.id}")
    assert first_price["data"]["pack_price_pence"] == 899
    assert second_price["data"]["pack_price_pence"] == 849
    assert second_price["data"]["unit_price_pence"] == 849
    assert second_price["data"]["supplier_id"] == world.sme.org.id
    assert paused["data"]["status"] == "paused"
    assert renamed["data"]["name"] == "Nitrile gloves, medium"
    body = json.dumps(items)
    assert world.sme.user.email not in body  # who changed a price is never published
    assert "stock" not in body


def test_award_changes_become_entries(world, client):
    product = world.product()
    offer = world.offer(world.sme, product, 500)
    _, cursor = crawl(client)
    order = world.order(world.trusts[0], world.buyers[0], [(offer, 2)])
    world.publish_placed(order.id)
    world.dispatch(order.supplier_orders[0].id)
    items, _ = crawl(client, cursor)
    assert [i["kind"] for i in items] == ["order.awarded", "order.updated"]
    assert items[0]["data"]["ocid"] == f"ocds-mkt000-{order.id}"
    assert items[1]["data"]["event"] == "dispatched"
    assert items[0]["href"].endswith(f"/api/v1/ocds/records/ocds-mkt000-{order.id}")


def test_a_rolled_back_change_never_appears(world, session_factory, client):
    session = session_factory()
    catalog.create_product(session, SYSTEM, name="Never", category_code="33141113")
    session.flush()  # the entry is written in the transaction...
    session.rollback()  # ...and goes with it
    session.close()
    items, _ = crawl(client)
    assert items == []


def test_paging_since_and_bad_input(world, client):
    before = utcnow()
    products = [world.product(name=f"Product {i}") for i in range(5)]
    items, cursor = crawl(client, limit=2)
    assert [i["object_id"] for i in items] == [p.id for p in products]
    # Resuming from any entry's own cursor continues right after it.
    page = client.get(f"/api/v1/changes?cursor={items[2]['cursor']}").get_json()
    assert [i["object_id"] for i in page["items"]] == [p.id for p in products[3:]]
    # Nothing new: an empty page that keeps the cursor.
    page = client.get(f"/api/v1/changes?cursor={cursor}").get_json()
    assert page == {"items": [], "next_cursor": cursor, "has_more": False}
    since = (before - timedelta(seconds=1)).isoformat()
    page = client.get("/api/v1/changes", query_string={"since": since}).get_json()
    assert len(page["items"]) == 5
    future = (utcnow() + timedelta(days=1)).isoformat()
    page = client.get("/api/v1/changes", query_string={"since": future}).get_json()
    assert page["items"] == []
    world.product(name="Later")
    later = client.get(f"/api/v1/changes?cursor={page['next_cursor']}").get_json()
    assert [i["data"]["name"] for i in later["items"]] == ["Later"]
    assert_problem(client.get("/api/v1/changes?cursor=WzEsMiwzXQ"), 422)
    assert_problem(client.get("/api/v1/changes?cursor=WyJhIiwiYiJd"), 422)
    assert_problem(client.get("/api/v1/changes?limit=100000"), 422)


def test_entries_are_append_only(world, session_factory):
    world.product()
    with session_factory() as session:
        entry = session.scalars(select(ChangeEntry)).first()
        entry.kind = "tampered"
        with pytest.raises(Exception, match="never changed"):
            session.flush()


def test_concurrent_writers_are_crawled_exactly_once(world, app, session_factory):
    """Writers in threads (separate sessions) create products and change prices, holding their
    transactions open for random times so that commits interleave; a crawler follows the feed
    from its start, during and after the writes. It sees every entry exactly once, in order."""
    product = world.product(name="Shared product")
    offers = [world.offer(world.sme, product, 1000), world.offer(world.large, product, 1100)]
    setup_entries = 5  # the product, two offers and their first prices
    writers, per_writer = 6, 8
    total = setup_entries + writers * per_writer  # one entry per write
    errors: list[BaseException] = []
    done = threading.Event()
    seen: list[str] = []

    def write(n: int) -> None:
        rng = random.Random(n)
        try:
            for k in range(per_writer):
                with unit_of_work(session_factory) as session:
                    if k % 2:
                        supplier = world.sme if n % 2 == 0 else world.large
                        catalog.update_offer(
                            session,
                            supplier.principal,
                            offers[n % 2].id,
                            {"pack_price_pence": 2000 + n * 100 + k},
                        )
                    else:
                        catalog.create_product(
                            session, SYSTEM, name=f"W{n}-{k}", category_code="33141113"
                        )
                    session.flush()
                    time.sleep(rng.uniform(0, 0.05))  # commit later, out of step with others
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    def crawler() -> None:
        client = app.test_client()
        cursor = None
        deadline = time.monotonic() + 90
        try:
            while time.monotonic() < deadline:
                items, cursor = crawl(client, cursor, limit=7)
                seen.extend(i["cursor"] for i in items)
                if done.is_set() and len(seen) >= total:
                    return
                time.sleep(0.01)
        except BaseException as error:  # pragma: no cover
            errors.append(error)

    reader = threading.Thread(target=crawler)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    done.set()
    reader.join(timeout=120)
    assert not errors, errors

    everything, _ = crawl(app.test_client())
    assert len(everything) == total
    # The crawler saw each entry exactly once, in feed order.
    assert len(seen) == len(set(seen))
    assert seen == [i["cursor"] for i in everything]


def test_out_of_order_commits_are_held_back_not_skipped(
    world, session_factory, client, is_postgres
):
    """T1 writes first and commits last. A crawler reading between the two commits must not
    move past T1's entry (it would never see it): the entry T2 committed is held back until T1
    ends, then both come, in order."""
    if not is_postgres:
        pytest.skip(
            "SQLite serialises writers (one write lock, held to commit): commits cannot be out of order there"
        )
    _, cursor = crawl(client)
    first = session_factory()
    catalog.create_product(first, SYSTEM, name="T1 (commits last)", category_code="33141113")
    first.flush()
    with unit_of_work(session_factory) as second:
        catalog.create_product(second, SYSTEM, name="T2 (commits first)", category_code="33141113")
    items, during = crawl(client, cursor)
    assert items == []  # T2's entry is committed but held back while T1 is open
    assert during == cursor
    first.commit()
    first.close()
    items, _ = crawl(client, during)
    assert [i["data"]["name"] for i in items] == ["T1 (commits last)", "T2 (commits first)"]
