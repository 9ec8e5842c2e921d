"""Facet counts and ranked pages checked against the result lists themselves.

The SQL backend counts facets apart from the pages it returns: without a facet filter every
facet counts every match (SQLite hands the matches' keys over as two strings, PostgreSQL groups
them with hash aggregates); with one, each match is weighed filter by filter. Whichever way, a
facet must count what the same search *without that facet's own filter* lists, so these tests
walk those lists to the end and count them. The same tests run on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import pytest

from marketplace.catalog.models import OfferStatus
from marketplace.catalog.search.base import PRICE_BUCKETS
from tests.search.conftest import search

FACET_PARAMS = {
    "category": ("category",),
    "supplier": ("supplier",),
    "kind": ("kind",),
    "unit_price": ("min_unit_price", "max_unit_price"),
}


@pytest.fixture
def mixed(cat):
    """36 products in five categories (three kinds), four suppliers, prices across every
    unit-price bucket, some offers out of stock and some paused."""
    rng = random.Random(11)
    suppliers = [cat.supplier(f"Vendor {n}", sme=n % 2 == 0) for n in range(4)]
    shapes = [  # (category, name, units per pack)
        ("18424300", "Nitrile examination gloves", 100),
        ("33141420", "Sterile surgical gloves", 50),
        ("33141110", "Foam dressing with border", 10),
        ("33193120", "Folding wheelchair, gloves holder", 1),
        ("MKT-VOICE", "Smart speaker for gloves users", 1),
    ]
    active: dict[str, set[str]] = {}
    for n in range(36):
        category, name, units = shapes[n % len(shapes)]
        offers = []
        for supplier in rng.sample(suppliers, rng.randint(1, 3)):
            status = OfferStatus.PAUSED if rng.random() < 0.15 else OfferStatus.ACTIVE
            price = rng.choice([300, 800, 4_500, 12_000, 90_000, 250_000])
            offers.append((supplier, price, rng.choice([0, 4, 20]), status))
        if all(o[3] == OfferStatus.PAUSED for o in offers):
            supplier, price, stock, _status = offers[0]
            offers[0] = (supplier, price, stock, OfferStatus.ACTIVE)
        product_id = cat.product(f"{name} {n}", category, offers, units_per_pack=units)
        active[product_id] = {o[0].id for o in offers if o[3] == OfferStatus.ACTIVE}
    return {"suppliers": suppliers, "active": active}


def walk(client, params: dict, limit: int = 100) -> list[dict]:
    """Every item of a search, walking its cursors."""
    body = search(client, **params, limit=limit)
    items = list(body["items"])
    while body["next_cursor"]:
        body = search(client, **params, limit=limit, cursor=body["next_cursor"])
        items.extend(body["items"])
    return items


def bucket(unit_price: float) -> str:
    value = Decimal(str(unit_price))
    for key, low, high in PRICE_BUCKETS:
        if (low is None or value >= low) and (high is None or value < high):
            return key
    raise AssertionError(unit_price)


def expected_facets(client, cat, active, params: dict) -> dict[str, dict]:
    """Each facet as counted from the list of the same search without its own filter."""
    found = {}
    for facet, own in FACET_PARAMS.items():
        items = walk(client, {k: v for k, v in params.items() if k not in own})
        if facet == "category":
            counts: Counter = Counter()
            paths = {c.code: c.path for c in cat.categories.values()}
            for item in items:
                counts.update(c for c in paths[item["category"]["code"]].split("/") if c)
        elif facet == "supplier":
            counts = Counter(s for item in items for s in active[item["id"]])
        elif facet == "kind":
            counts = Counter(item["kind"] for item in items)
        else:
            counts = Counter({key: 0 for key, _low, _high in PRICE_BUCKETS})
            counts.update(bucket(item["best_offer"]["unit_price_pence"]) for item in items)
        found[facet] = dict(counts)
    return found


def actual_facets(body) -> dict[str, dict]:
    keys = {"category": "code", "supplier": "id", "kind": "value", "unit_price": "key"}
    return {
        name: {entry[key]: entry["count"] for entry in body["facets"][name]}
        for name, key in keys.items()
    }


def assert_consistent(client, cat, mixed, params: dict) -> dict:
    body = search(client, **params, limit=100)
    listed = body["items"]
    assert body["next_cursor"] is None  # the catalogue fits one page
    assert body["total"] == len(listed) == len({i["id"] for i in listed})
    assert actual_facets(body) == expected_facets(client, cat, mixed["active"], params)
    return body


def test_facets_count_what_the_lists_show_for_every_filter(client, cat, mixed):
    s0, s1, _s2, s3 = (s.id for s in mixed["suppliers"])
    cases = [
        {"q": "gloves"},  # no facet filter: every facet counts every match
        {"q": "gloves", "in_stock": "true"},
        {"q": "gloves", "phb_eligible": "false"},
        {"q": "gloves", "supplier": s0},
        {"q": "gloves", "kind": "commodity"},
        {"q": "gloves", "min_unit_price": "5", "max_unit_price": "1200"},
        {"q": "gloves", "category": "33140000"},
        {"q": "dressing", "supplier": s1, "max_unit_price": "1000", "in_stock": "false"},
        {"q": "gloves", "supplier": s3, "kind": "device", "sort": "unit_price"},
        {"q": "nitrile gloves", "sort": "newest"},
        {},
        {"supplier": s0, "min_unit_price": "1"},
    ]
    for params in cases:
        body = assert_consistent(client, cat, mixed, params)
        if params == {"q": "gloves"}:
            assert body["total"] == 29  # every name but the dressings' has "gloves"


def test_text_facets_follow_price_stock_status_and_product_changes(client, cat, mixed):
    params = {"q": "gloves"}
    before = assert_consistent(client, cat, mixed, params)
    listed = walk(client, params)
    matching = {i["id"] for i in listed}
    product_id = next(
        p for p, suppliers in mixed["active"].items() if len(suppliers) == 1 and p in matching
    )
    (supplier_id,) = mixed["active"][product_id]
    supplier = next(s for s in mixed["suppliers"] if s.id == supplier_id)

    # A price change moves the product to the cheapest bucket (1p a pack: at most 1p a unit).
    was_cheapest = product_id in {
        i["id"] for i in walk(client, {**params, "max_unit_price": "9.9999"})
    }
    cat.update_offer(product_id, supplier, pack_price_pence=1)
    after_price = assert_consistent(client, cat, mixed, params)
    assert actual_facets(after_price)["unit_price"]["under-10p"] == actual_facets(before)[
        "unit_price"
    ]["under-10p"] + (0 if was_cheapest else 1)
    assert product_id in {i["id"] for i in walk(client, {**params, "max_unit_price": "1"})}

    # Out of stock: gone from in_stock=true, facets there follow.
    cat.update_offer(product_id, supplier, stock=0)
    in_stock = assert_consistent(client, cat, mixed, {**params, "in_stock": "true"})
    assert product_id not in {i["id"] for i in walk(client, {**params, "in_stock": "true"})}
    assert in_stock["total"] == len(walk(client, {**params, "in_stock": "true"}))

    # Its only active offer paused: no longer searchable, so every count drops by one.
    cat.update_offer(product_id, supplier, status=OfferStatus.PAUSED)
    mixed["active"].pop(product_id)
    paused = assert_consistent(client, cat, mixed, params)
    assert paused["total"] == before["total"] - 1

    # A product renamed away from the word leaves the text's facets at once (a wheelchair or
    # a speaker: their categories' names do not say "gloves").
    other = next(
        i["id"]
        for i in listed
        if i["id"] != product_id and i["category"]["code"] in ("33193120", "MKT-VOICE")
    )
    cat.update_product(other, name="Bedside commode chair")
    renamed = assert_consistent(client, cat, mixed, params)
    assert renamed["total"] == before["total"] - 2


@pytest.mark.parametrize(
    "params",
    [
        {"q": "gloves"},
        {"q": "gloves", "in_stock": "true"},  # the ranked page joins the filter columns
        {"q": "gloves", "kind": "commodity", "max_unit_price": "1200"},
    ],
)
def test_ranked_cursor_walk_returns_every_match_once_in_order(client, mixed, params):
    listed = walk(client, params, limit=7)  # several pages: cursors cross page boundaries
    one_page = search(client, **params, limit=100)
    assert [i["id"] for i in listed] == [i["id"] for i in one_page["items"]]
    assert len(listed) == len({i["id"] for i in listed}) == one_page["total"] > 7
