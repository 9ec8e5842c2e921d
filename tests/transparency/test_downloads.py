"""Bulk downloads: CSV and JSON lines with the documented columns, the same data as the API,
streamed, gzip when asked, trust orders only."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from marketplace.catalog import service as catalog
from marketplace.catalog.models import Category, Offer, Product
from marketplace.orders.models import PaymentMethod
from marketplace.transparency import downloads
from tests.support import assert_problem

DOC = Path(__file__).resolve().parents[2] / "docs" / "open-data.md"


@pytest.fixture
def data(world):
    bandage = world.product(name="=Cohesive bandage", category_code="33141113")  # a formula!
    gloves = world.product(
        name="Nitrile gloves, box of 100", category_code="18424300", units_per_pack=100
    )
    world.product(name="Nobody sells this", category_code="33141310")
    offers = {
        "bandage_sme": world.offer(world.sme, bandage, 250),
        "bandage_large": world.offer(world.large, bandage, 240),
        "gloves_large": world.offer(
            world.large, gloves, 256, price_breaks=[{"min_qty": 10, "pack_price_pence": 230}]
        ),
    }
    with world.session_factory.begin() as session:
        catalog.update_offer(
            session, world.sme.principal, offers["bandage_sme"].id, {"pack_price_pence": 245}
        )
    for i, trust in enumerate(world.trusts):
        world.purchase(trust, gloves, quantity=10, total_pence=2560 + 300 * i, ref=f"g{i}")
    trust_order = world.order(
        world.trusts[0], world.buyers[0], [(offers["bandage_sme"], 2), (offers["gloves_large"], 12)]
    )
    holder = world.holder(name="Private Person", email="private@example.org")
    world.order(
        world.commissioner,
        holder,
        [(offers["bandage_large"], 1)],
        payment_method=PaymentMethod.BUDGET,
        budget=world.budget(holder),
    )
    return {"offers": offers, "trust_order": trust_order, "bandage": bandage, "gloves": gloves}


def get_csv(client, name: str) -> tuple[list[str], list[dict[str, str]]]:
    response = client.get(f"/api/v1/open-data/downloads/{name}.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    reader = csv.DictReader(io.StringIO(response.get_data(as_text=True)))
    return list(reader.fieldnames or []), list(reader)


def get_jsonl(client, name: str) -> list[dict]:
    response = client.get(f"/api/v1/open-data/downloads/{name}.jsonl")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    return [json.loads(line) for line in response.get_data(as_text=True).splitlines()]


def same(csv_cell: str, json_cell) -> bool:
    if json_cell is None:
        return csv_cell == ""
    if isinstance(json_cell, bool):
        return csv_cell == ("true" if json_cell else "false")
    if isinstance(json_cell, list | dict):
        return json.loads(csv_cell) == json_cell
    if isinstance(json_cell, int | float):
        return Decimal(csv_cell) == Decimal(str(json_cell))
    return csv_cell.removeprefix("'") == json_cell


def test_every_dataset_in_both_formats_with_the_documented_columns(data, client):
    documented = DOC.read_text(encoding="utf-8")
    for name, dataset in downloads.DATASETS.items():
        header, rows = get_csv(client, name)
        assert header == list(dataset.columns), name
        lines = get_jsonl(client, name)
        assert len(lines) == len(rows), name
        for row, line in zip(rows, lines, strict=True):
            assert list(line) == list(dataset.columns)
            for column in dataset.columns:
                assert same(row[column], line[column]), (name, column, row[column], line[column])
        # docs/open-data.md documents each dataset's columns, in order.
        section = documented.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        assert re.findall(r"^\| `([a-z0-9_]+)` \|", section, flags=re.MULTILINE) == list(
            dataset.columns
        ), name


def test_catalogue_matches_the_public_product_api(data, client):
    _, rows = get_csv(client, "catalogue")
    by_offer = {r["offer_id"]: r for r in rows if r["offer_id"]}
    assert len(by_offer) == 3
    unoffered = [r for r in rows if not r["offer_id"]]
    assert [r["product_name"] for r in unoffered] == ["Nobody sells this"]
    # Text a spreadsheet would run as a formula is neutralised in CSV (not in JSON lines).
    assert any(r["product_name"] == "'=Cohesive bandage" for r in rows)
    for product in (data["bandage"], data["gloves"]):
        body = client.get(f"/api/v1/products/{product.id}").get_json()
        for offer in body["offers"]:
            row = by_offer[offer["id"]]
            assert int(row["pack_price_pence"]) == offer["pack_price_pence"]
            assert Decimal(row["unit_price_pence"]) == Decimal(str(offer["unit_price_pence"]))
            assert row["supplier_name"] == offer["supplier"]["name"]
            assert int(row["stock"]) == offer["stock"]
            assert row["product_id"] == body["id"]
            assert row["category_code"] == body["category"]["code"]
            assert row["gtin"] == (body["gtin"] or "")
    gloves = by_offer[data["offers"]["gloves_large"].id]
    assert gloves["unit_price_pence"] == "2.5600"
    assert gloves["supplier_is_sme"] == "false"
    assert by_offer[data["offers"]["bandage_sme"].id]["supplier_is_sme"] == "true"


def test_price_history_has_every_price_and_nobody_who_changed_it(data, client, session_factory):
    header, rows = get_csv(client, "offer-price-history")
    assert "changed_by" not in header
    sme = [r for r in rows if r["offer_id"] == data["offers"]["bandage_sme"].id]
    assert [r["pack_price_pence"] for r in sme] == ["250", "245"]
    api = client.get(f"/api/v1/offers/{data['offers']['bandage_sme'].id}/price-history").get_json()
    assert sorted(int(r["pack_price_pence"]) for r in sme) == sorted(
        i["pack_price_pence"] for i in api["items"]
    )
    gloves = next(r for r in rows if r["offer_id"] == data["offers"]["gloves_large"].id)
    assert json.loads(gloves["price_breaks"]) == [{"min_qty": 10, "pack_price_pence": 230}]


def test_price_variance_matches_the_pricing_api(data, client):
    _, rows = get_csv(client, "price-variance")
    api = client.get("/api/v1/price-variance").get_json()
    assert (
        [r["product_id"] for r in rows]
        == [i["product_id"] for i in api["items"]]
        == [data["gloves"].id]
    )
    (row,), (item,) = rows, api["items"]
    for column in ("n_trusts", "possible_savings_pence", "units", "spend_pence", "outliers"):
        assert int(row[column]) == item[column], column
    for column in ("median_pence", "benchmark_pence", "min_pence", "max_pence"):
        assert Decimal(row[column]) == Decimal(str(item[column])), column
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["window_from"])


def test_awarded_lines_are_trust_orders_only(data, client):
    _, rows = get_csv(client, "awarded-order-lines")
    order = data["trust_order"]
    assert {r["order_id"] for r in rows} == {order.id}
    assert {r["ocid"] for r in rows} == {f"ocds-mkt000-{order.id}"}
    assert sorted(int(r["gross_pence"]) for r in rows) == sorted(
        line.gross_pence for so in order.supplier_orders for line in so.lines
    )
    assert {r["trust_ods_code"] for r in rows} == {"RR8"}
    gloves = next(r for r in rows if r["product_id"] == data["gloves"].id)
    assert gloves["quantity"] == "12"
    assert gloves["unit_price_pence"] == "2.5600"


def test_gzip_when_asked(data, client):
    plain = client.get("/api/v1/open-data/downloads/catalogue.csv")
    assert "Content-Encoding" not in plain.headers
    packed = client.get(
        "/api/v1/open-data/downloads/catalogue.csv", headers={"Accept-Encoding": "gzip, deflate"}
    )
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed.get_data()) == plain.get_data()
    refused = client.get(
        "/api/v1/open-data/downloads/catalogue.jsonl",
        headers={"Accept-Encoding": "gzip;q=0, identity"},
    )
    assert "Content-Encoding" not in refused.headers


def test_downloads_stream_in_chunks(world, client, session_factory):
    with session_factory.begin() as session:
        category = session.query(Category).filter_by(code="33141113").one()
        supplier = world.large.org.id
        for i in range(600):
            product = Product(
                name=f"Bulk product {i:04d} " + "x" * 80,
                category_id=category.id,
                attributes={},
                assurance={},
            )
            session.add(product)
            session.flush()
            session.add(
                Offer(
                    product_id=product.id,
                    supplier_id=supplier,
                    pack_price_pence=100 + i,
                    stock=1,
                    price_breaks=[],
                )
            )
    response = client.get("/api/v1/open-data/downloads/catalogue.csv")
    assert response.is_streamed
    chunks = list(response.response)
    assert len(chunks) >= 3  # 64 KiB at a time, not the whole file at once
    assert sum(len(c) for c in chunks) > 150_000
    rows = list(csv.DictReader(io.StringIO(b"".join(chunks).decode())))
    assert len(rows) == 600


def test_the_index_and_unknown_datasets(data, client):
    index = client.get("/api/v1/open-data").get_json()
    assert [d["name"] for d in index["datasets"]] == list(downloads.DATASETS)
    assert index["datasets"][0]["csv"].endswith("/api/v1/open-data/downloads/catalogue.csv")
    assert_problem(client.get("/api/v1/open-data/downloads/budgets.csv"), 404)
    assert client.get("/api/v1/open-data/downloads/catalogue.xlsx").status_code == 404
