"""Quotes and purchase-order orders through the API: pricing, splitting by supplier, the
supplier-order state machine, idempotency, authorisation and stock under concurrency."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import func, select

from marketplace.db import utcnow
from marketplace.orders import quotes
from marketplace.orders.models import Order, SupplierOrder
from marketplace.pricing.models import PurchaseRecord
from tests.orders.conftest import ADDRESS
from tests.support import assert_problem


def quote(client, actor, lines, method="purchase_order", **extra):
    response = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": o.id, "quantity": q} for o, q in lines],
            "payment_method": method,
            **extra,
        },
        headers=actor.headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def order(client, actor, quote_id, key="key-1", **extra):
    body = {"quote_id": quote_id, "delivery_address": ADDRESS, "po_number": "PO-1001"} | extra
    return client.post(
        "/api/v1/orders", json=body, headers=actor.headers | {"Idempotency-Key": key}
    )


def count(db, model) -> int:
    db.rollback()
    return db.scalar(select(func.count()).select_from(model))


def test_quote_prices_every_line(client, shop):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 12), (shop.offers["chair"], 1)])
    gloves, chair = body["lines"]
    assert gloves["pack_price_pence"] == 500  # the 10+ volume break
    assert gloves["unit_price_pence"] == 5.0  # 500p / 100 gloves
    assert gloves["net_pence"] == 6_000
    assert gloves["vat_pence"] == 1_200
    assert gloves["gross_pence"] == 7_200
    assert chair["vat_pence"] == 0
    assert body["net_pence"] == 6_000 + 42_000
    assert body["gross_pence"] == body["net_pence"] + body["vat_pence"]
    assert body["orderable"] is True
    assert gloves["price_verdict"]["verdict"] is None  # no trust has bought it yet
    assert gloves["price_verdict"]["reason"]
    assert gloves["cheaper_offer"]["offer_id"] == shop.offers["gloves_b"].id
    assert "cheaper offer" in gloves["cheaper_offer"]["message"]
    assert chair["cheaper_offer"] is None
    lifetime = quotes.QUOTE_LIFETIME.total_seconds()
    from datetime import datetime

    created = datetime.fromisoformat(body["created_at"])
    assert (datetime.fromisoformat(body["expires_at"]) - created).total_seconds() == lifetime


def test_vat_rates_are_json_numbers_as_documented(client, shop):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 1), (shop.offers["chair"], 1)])
    assert [line["vat_rate_percent"] for line in body["lines"]] == [20, 0]
    placed = order(client, shop.buyer, body["id"])
    assert placed.status_code == 201, placed.get_json()
    rates = [
        line["vat_rate_percent"]
        for supplier_order in placed.get_json()["supplier_orders"]
        for line in supplier_order["lines"]
    ]
    assert sorted(rates) == [0, 20]
    assert all(type(rate) is int for rate in rates)


def test_quote_reports_problems_per_line_and_cannot_be_ordered(client, shop, session_factory, db):
    from marketplace.catalog import service as catalog

    with session_factory.begin() as session:
        catalog.update_offer(
            session, shop.other_supplier.principal, shop.offers["gloves_b"].id, {"status": "paused"}
        )
    with session_factory.begin() as session:
        catalog.update_offer(
            session, shop.supplier.principal, shop.offers["app"].id, {"min_order_qty": 5}
        )
    body = quote(
        client,
        shop.buyer,
        [(shop.offers["gloves_b"], 1), (shop.offers["app"], 2), (shop.offers["chair"], 6)],
    )
    codes = [[p["code"] for p in line["problems"]] for line in body["lines"]]
    assert codes == [["offer-paused"], ["below-minimum-order-quantity"], ["insufficient-stock"]]
    assert body["orderable"] is False
    problem = assert_problem(order(client, shop.buyer, body["id"]), 409, code="quote-not-orderable")
    assert len(problem["problems"]) == 3
    assert count(db, Order) == 0


def test_bad_quotes_are_422(client, shop):
    offer = shop.offers["gloves_a"]
    cases = [
        {"lines": [], "payment_method": "purchase_order"},
        {"lines": [{"offer_id": offer.id, "quantity": 2.5}], "payment_method": "purchase_order"},
        {"lines": [{"offer_id": offer.id, "quantity": 1e-9}], "payment_method": "purchase_order"},
        {"lines": [{"offer_id": offer.id, "quantity": 0}], "payment_method": "purchase_order"},
        {"lines": [{"offer_id": "off_nope", "quantity": 1}], "payment_method": "purchase_order"},
        {
            "lines": [{"offer_id": offer.id, "quantity": 1}, {"offer_id": offer.id, "quantity": 2}],
            "payment_method": "purchase_order",
        },
        {"lines": [{"offer_id": offer.id, "quantity": 1}], "payment_method": "cash"},
        {
            "lines": [{"offer_id": offer.id, "quantity": 1}],
            "payment_method": "purchase_order",
            "budget_id": "bud_x",
        },
    ]
    for body in cases:
        assert_problem(client.post("/api/v1/quotes", json=body, headers=shop.buyer.headers), 422)


def test_purchase_order_is_split_by_supplier_and_reserves_stock(client, shop, db):
    body = quote(
        client,
        shop.buyer,
        [(shop.offers["gloves_a"], 2), (shop.offers["chair"], 1), (shop.offers["app"], 3)],
    )
    response = order(client, shop.buyer, body["id"])
    assert response.status_code == 201, response.get_json()
    placed = response.get_json()
    assert placed["status"] == "placed"
    assert placed["po_number"] == "PO-1001"
    assert placed["gross_pence"] == body["gross_pence"]
    by_supplier = {so["supplier_id"]: so for so in placed["supplier_orders"]}
    assert set(by_supplier) == {shop.supplier.org.id, shop.other_supplier.org.id}
    assert (
        by_supplier[shop.supplier.org.id]["gross_pence"]
        + by_supplier[shop.other_supplier.org.id]["gross_pence"]
        == placed["gross_pence"]
    )
    assert len(by_supplier[shop.supplier.org.id]["lines"]) == 2
    assert shop.stock("gloves_a") == 48
    assert shop.stock("chair") == 4
    assert shop.stock("app") == 997


def test_a_retry_with_the_same_key_returns_the_same_order(client, shop, db):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 2)])
    first = order(client, shop.buyer, body["id"], key="retry-me")
    second = order(client, shop.buyer, body["id"], key="retry-me")
    assert first.status_code == second.status_code == 201
    assert first.get_json()["id"] == second.get_json()["id"]
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert count(db, Order) == 1
    assert shop.stock("gloves_a") == 48
    different = order(client, shop.buyer, body["id"], key="retry-me", po_number="PO-OTHER")
    assert_problem(different, 422, code="idempotency-key-reused")
    again = order(client, shop.buyer, body["id"], key="a-new-key")
    assert_problem(again, 409, code="quote-already-ordered")


def test_purchase_order_needs_a_po_number_and_nothing_is_written(client, shop, db):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 2)])
    response = client.post(
        "/api/v1/orders",
        json={"quote_id": body["id"], "delivery_address": ADDRESS},
        headers=shop.buyer.headers | {"Idempotency-Key": "k"},
    )
    assert "po_number" in assert_problem(response, 422)["errors"]
    bad_address = order(
        client, shop.buyer, body["id"], delivery_address=ADDRESS | {"postcode": "not a postcode"}
    )
    assert_problem(bad_address, 422)
    assert count(db, Order) == 0
    assert shop.stock("gloves_a") == 50


def test_an_expired_quote_cannot_be_ordered(client, shop, session_factory, db):
    with session_factory.begin() as session:
        stale = quotes.create_quote(
            session,
            shop.buyer.principal,
            lines=[quotes.BasketLine(shop.offers["gloves_a"].id, 1)],
            payment_method="purchase_order",
            now=utcnow() - timedelta(minutes=16),
        )
    assert_problem(order(client, shop.buyer, stale.id), 409, code="quote-expired")
    assert shop.stock("gloves_a") == 50


def test_prices_are_locked_for_the_life_of_the_quote(client, shop, session_factory):
    from marketplace.catalog import service as catalog

    body = quote(client, shop.buyer, [(shop.offers["chair"], 1)])
    with session_factory.begin() as session:
        catalog.update_offer(
            session,
            shop.other_supplier.principal,
            shop.offers["chair"].id,
            {"pack_price_pence": 99_000},
        )
    placed = order(client, shop.buyer, body["id"]).get_json()
    assert placed["net_pence"] == 42_000


def test_orders_are_visible_only_to_their_trust(client, shop):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 1)])
    order_id = order(client, shop.buyer, body["id"]).get_json()["id"]
    assert client.get(f"/api/v1/orders/{order_id}", headers=shop.buyer.headers).status_code == 200
    assert_problem(client.get(f"/api/v1/orders/{order_id}", headers=shop.other_buyer.headers), 404)
    assert_problem(
        client.get(f"/api/v1/quotes/{body['id']}", headers=shop.other_buyer.headers), 404
    )
    assert client.get("/api/v1/orders", headers=shop.other_buyer.headers).get_json()["items"] == []
    assert [
        o["id"]
        for o in client.get("/api/v1/orders", headers=shop.buyer.headers).get_json()["items"]
    ] == [order_id]
    assert_problem(client.get("/api/v1/orders", headers=shop.supplier.headers), 403)
    assert_problem(
        client.post(f"/api/v1/orders/{order_id}/cancel", json={}, headers=shop.other_buyer.headers),
        404,
    )
    assert_problem(client.get("/api/v1/orders"), 401)


def test_suppliers_see_and_move_only_their_own_supplier_orders(client, shop):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 1), (shop.offers["chair"], 1)])
    placed = order(client, shop.buyer, body["id"]).get_json()
    mine = next(so for so in placed["supplier_orders"] if so["supplier_id"] == shop.supplier.org.id)
    listed = client.get("/api/v1/supplier-orders", headers=shop.supplier.headers).get_json()[
        "items"
    ]
    assert [so["id"] for so in listed] == [mine["id"]]
    assert listed[0]["delivery_address"] == ADDRESS | {"line2": None}
    assert_problem(
        client.get(f"/api/v1/supplier-orders/{mine['id']}", headers=shop.other_supplier.headers),
        404,
    )
    assert_problem(
        client.post(
            f"/api/v1/supplier-orders/{mine['id']}/accept",
            json={},
            headers=shop.other_supplier.headers,
        ),
        404,
    )
    assert_problem(
        client.post(
            f"/api/v1/supplier-orders/{mine['id']}/accept", json={}, headers=shop.buyer.headers
        ),
        403,
    )
    assert_problem(client.get("/api/v1/supplier-orders", headers=shop.buyer.headers), 403)


def transition(client, actor, supplier_order_id, action, **body):
    return client.post(
        f"/api/v1/supplier-orders/{supplier_order_id}/{action}", json=body, headers=actor.headers
    )


def test_supplier_order_lifecycle_and_delivery_records_purchases(client, shop, db):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 12)])
    placed = order(client, shop.buyer, body["id"]).get_json()
    so_id = placed["supplier_orders"][0]["id"]
    assert_problem(
        transition(client, shop.supplier, so_id, "deliver"), 409, code="invalid-transition"
    )
    assert_problem(
        transition(client, shop.supplier, so_id, "dispatch"), 409, code="invalid-transition"
    )
    for action, status in (
        ("accept", "accepted"),
        ("dispatch", "dispatched"),
        ("deliver", "delivered"),
    ):
        response = transition(client, shop.supplier, so_id, action)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["status"] == status
    assert_problem(transition(client, shop.supplier, so_id, "accept"), 409)
    final = client.get(f"/api/v1/orders/{placed['id']}", headers=shop.buyer.headers).get_json()
    assert final["status"] == "completed"
    db.rollback()
    records = db.scalars(select(PurchaseRecord)).all()
    assert len(records) == 1
    assert records[0].source == "marketplace"
    assert records[0].quantity == 12
    assert records[0].total_price_pence == 6_000
    assert records[0].trust_id == shop.buyer.org.id


def test_rejection_and_cancellation_give_the_stock_back(client, shop):
    body = quote(client, shop.buyer, [(shop.offers["gloves_a"], 5), (shop.offers["chair"], 2)])
    placed = order(client, shop.buyer, body["id"]).get_json()
    assert shop.stock("gloves_a") == 45
    assert shop.stock("chair") == 3
    gloves_so = next(
        so for so in placed["supplier_orders"] if so["supplier_id"] == shop.supplier.org.id
    )
    rejected = transition(
        client, shop.supplier, gloves_so["id"], "reject", reason="Discontinued line"
    )
    assert rejected.get_json()["status"] == "rejected"
    assert shop.stock("gloves_a") == 50
    cancelled = client.post(
        f"/api/v1/orders/{placed['id']}/cancel",
        json={"reason": "Ordered twice"},
        headers=shop.buyer.headers,
    )
    assert cancelled.status_code == 200
    assert cancelled.get_json()["status"] == "cancelled"
    assert shop.stock("chair") == 5
    assert_problem(
        client.post(f"/api/v1/orders/{placed['id']}/cancel", json={}, headers=shop.buyer.headers),
        409,
    )


def test_cannot_cancel_after_dispatch(client, shop):
    placed = order(
        client, shop.buyer, quote(client, shop.buyer, [(shop.offers["chair"], 1)])["id"]
    ).get_json()
    so_id = placed["supplier_orders"][0]["id"]
    transition(client, shop.other_supplier, so_id, "accept")
    transition(client, shop.other_supplier, so_id, "dispatch")
    assert_problem(
        client.post(f"/api/v1/orders/{placed['id']}/cancel", json={}, headers=shop.buyer.headers),
        409,
    )
    assert shop.stock("chair") == 4


def test_concurrent_orders_never_oversell(app, shop, db):
    """Ten buyers race for a wheelchair offer with five in stock: exactly five orders succeed."""
    buyers = [shop.factory.actor(shop.buyer.user.role, shop.buyer.org) for _ in range(10)]
    quote_ids = []
    with app.test_client() as client:
        for buyer in buyers:
            quote_ids.append(quote(client, buyer, [(shop.offers["chair"], 1)])["id"])
    results: list[int] = []
    barrier = threading.Barrier(len(buyers))

    def place(buyer, quote_id):
        client = app.test_client()
        barrier.wait()
        results.append(order(client, buyer, quote_id, key=f"race-{quote_id}").status_code)

    threads = [
        threading.Thread(target=place, args=pair) for pair in zip(buyers, quote_ids, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] * 5 + [409] * 5
    assert shop.stock("chair") == 0
    assert count(db, Order) == 5
    assert count(db, SupplierOrder) == 5


def test_a_trust_order_is_published_as_ocds_releases_through_its_life(client, shop):
    from tests.transparency.ocds_schema import (
        assert_valid_record_package,
        assert_valid_release_package,
    )

    placed = order(
        client, shop.buyer, quote(client, shop.buyer, [(shop.offers["chair"], 1)])["id"]
    ).get_json()
    so_id = placed["supplier_orders"][0]["id"]
    for action in ("accept", "dispatch", "deliver"):
        assert transition(client, shop.other_supplier, so_id, action).status_code == 200
    package = client.get("/api/v1/ocds/releases").get_json()
    assert_valid_release_package(package)
    mine = [r for r in package["releases"] if r["ocid"].endswith(placed["id"])]
    tags = [tag for release in mine for tag in release["tag"]]
    assert "award" in tags
    assert tags.count("implementation") == 2  # dispatch, then delivery
    record = client.get(f"/api/v1/ocds/records/{mine[0]['ocid']}").get_json()
    assert_valid_record_package(record)
    supplier_party = next(
        p for p in record["records"][0]["compiledRelease"]["parties"] if "supplier" in p["roles"]
    )
    assert supplier_party["identifier"]["scheme"] == "GB-COH"
