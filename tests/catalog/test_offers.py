"""Offers through the API: create, change, pause, price history, isolation between suppliers."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.catalog.models import Offer, OfferPriceHistory
from tests.catalog.conftest import GTIN_BANDAGE
from tests.support import assert_problem


@pytest.fixture
def product(make):
    return make.product(gtin=GTIN_BANDAGE, units_per_pack=10)


def offer_body(product, **extra):
    return {
        "product_id": product.id,
        "pack_price_pence": 1250,
        "vat_rate_percent": 20,
        "stock": 40,
        "lead_time_days": 3,
        "min_order_qty": 2,
        "supplier_sku": "NG-1001",
        "price_breaks": [
            {"min_qty": 10, "pack_price_pence": 1150},
            {"min_qty": 50, "pack_price_pence": 1100},
        ],
        **extra,
    }


def history(db, offer_id):
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    return db.scalars(
        select(OfferPriceHistory)
        .where(OfferPriceHistory.offer_id == offer_id)
        .order_by(OfferPriceHistory.effective_from)
    ).all()


def count(db, model) -> int:
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    return db.scalar(select(func.count()).select_from(model))


def test_supplier_creates_an_offer_with_its_first_price(client, db, supplier, product):
    response = client.post("/api/v1/offers", json=offer_body(product), headers=supplier.headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["supplier"]["id"] == supplier.org.id
    assert body["pack_price_pence"] == 1250
    assert body["unit_price_pence"] == 125.0
    assert body["status"] == "active"
    assert body["vat_rate_percent"] == 20
    assert [b["min_qty"] for b in body["price_breaks"]] == [10, 50]
    rows = history(db, body["id"])
    assert [(r.pack_price_pence, len(r.price_breaks)) for r in rows] == [(1250, 2)]
    assert rows[0].changed_by == supplier.user.email


def test_operator_lists_for_a_named_supplier(client, factory, db, supplier, product):
    operator = factory.actor(Role.OPERATOR)
    body = assert_problem(
        client.post("/api/v1/offers", json=offer_body(product), headers=operator.headers), 422
    )
    assert "supplier_id" in body["errors"]
    response = client.post(
        "/api/v1/offers",
        json=offer_body(product, supplier_id=supplier.org.id),
        headers=operator.headers,
    )
    assert response.status_code == 201
    assert response.get_json()["supplier"]["id"] == supplier.org.id


def test_supplier_cannot_list_for_another_supplier(client, factory, db, supplier, product):
    other = factory.actor(Role.SUPPLIER)
    response = client.post(
        "/api/v1/offers",
        json=offer_body(product, supplier_id=other.org.id),
        headers=supplier.headers,
    )
    assert_problem(response, 403)
    assert count(db, Offer) == 0


@pytest.mark.parametrize("role", [Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER])
def test_buyers_and_budget_roles_cannot_create_offers(client, factory, db, product, role):
    actor = factory.actor(role)
    assert_problem(
        client.post("/api/v1/offers", json=offer_body(product), headers=actor.headers), 403
    )
    assert_problem(client.get("/api/v1/offers", headers=actor.headers), 403)
    assert count(db, Offer) == 0


def test_one_offer_per_supplier_and_product(client, db, supplier, product):
    first = client.post("/api/v1/offers", json=offer_body(product), headers=supplier.headers)
    again = client.post(
        "/api/v1/offers", json=offer_body(product, supplier_sku="other"), headers=supplier.headers
    )
    body = assert_problem(again, 409, code="duplicate-offer")
    assert body["existing_offer_id"] == first.get_json()["id"]
    assert count(db, Offer) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pack_price_pence": 2.5}, "pack_price_pence"),
        ({"pack_price_pence": 1e-9}, "pack_price_pence"),
        ({"pack_price_pence": 1e3}, "pack_price_pence"),
        ({"pack_price_pence": "1250"}, "pack_price_pence"),
        ({"pack_price_pence": 0}, "pack_price_pence"),
        ({"pack_price_pence": -5}, "pack_price_pence"),
        ({"pack_price_pence": True}, "pack_price_pence"),
        ({"stock": 2.5}, "stock"),
        ({"stock": -1}, "stock"),
        ({"min_order_qty": 0}, "min_order_qty"),
        ({"lead_time_days": 1.5}, "lead_time_days"),
        ({"vat_rate_percent": 17.5}, "vat_rate_percent"),
        ({"vat_rate_percent": "20"}, "vat_rate_percent"),
        ({"status": "deleted"}, "status"),
        ({"price_breaks": [{"min_qty": 10, "pack_price_pence": 1300}]}, "price_breaks"),
        (
            {
                "price_breaks": [
                    {"min_qty": 50, "pack_price_pence": 1100},
                    {"min_qty": 10, "pack_price_pence": 1150},
                ]
            },
            "price_breaks",
        ),
        (
            {
                "price_breaks": [
                    {"min_qty": 10, "pack_price_pence": 1100},
                    {"min_qty": 50, "pack_price_pence": 1150},
                ]
            },
            "price_breaks",
        ),
        ({"price_breaks": [{"min_qty": 10, "pack_price_pence": 11.5}]}, "price_breaks"),
    ],
)
def test_invalid_offer_is_422_and_writes_nothing(client, db, supplier, product, change, field):
    response = client.post(
        "/api/v1/offers", json=offer_body(product, **change), headers=supplier.headers
    )
    body = assert_problem(response, 422)
    assert field in body["errors"], body
    assert count(db, Offer) == 0
    assert count(db, OfferPriceHistory) == 0


def test_patch_price_appends_history_and_unchanged_patch_writes_nothing(
    client, db, supplier, product
):
    offer = client.post(
        "/api/v1/offers", json=offer_body(product), headers=supplier.headers
    ).get_json()
    url = f"/api/v1/offers/{offer['id']}"
    response = client.patch(url, json={"pack_price_pence": 1200}, headers=supplier.headers)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["pack_price_pence"] == 1200
    response = client.patch(url, json={"vat_rate_percent": 0}, headers=supplier.headers)
    assert response.get_json()["vat_rate_percent"] == 0
    client.patch(url, json={"price_breaks": []}, headers=supplier.headers)
    client.patch(url, json={"stock": 5, "lead_time_days": 7}, headers=supplier.headers)
    rows = history(db, offer["id"])
    assert [(r.pack_price_pence, str(r.vat_rate_percent), len(r.price_breaks)) for r in rows] == [
        (1250, "20.00", 2),
        (1200, "20.00", 2),
        (1200, "0.00", 2),
        (1200, "0.00", 0),
    ]
    audits = count(db, AuditEvent)
    same = {"pack_price_pence": 1200, "vat_rate_percent": 0, "stock": 5, "price_breaks": []}
    response = client.patch(url, json=same, headers=supplier.headers)
    assert response.status_code == 200
    assert len(history(db, offer["id"])) == 4
    assert count(db, AuditEvent) == audits

    public = client.get(f"{url}/price-history").get_json()
    assert [r["pack_price_pence"] for r in public["items"]] == [1250, 1200, 1200, 1200]
    assert public["items"][2]["vat_rate_percent"] == 0


def test_new_price_must_stay_above_existing_breaks(client, db, supplier, product):
    offer = client.post(
        "/api/v1/offers", json=offer_body(product), headers=supplier.headers
    ).get_json()
    response = client.patch(
        f"/api/v1/offers/{offer['id']}", json={"pack_price_pence": 1100}, headers=supplier.headers
    )
    body = assert_problem(response, 422)
    assert "price_breaks" in body["errors"]
    assert len(history(db, offer["id"])) == 1


def test_paused_offer_is_hidden_from_everyone_but_owner_and_operator(
    client, factory, db, supplier, product
):
    offer = client.post(
        "/api/v1/offers", json=offer_body(product), headers=supplier.headers
    ).get_json()
    url = f"/api/v1/offers/{offer['id']}"
    assert client.get(url).status_code == 200
    assert client.get(f"{url}/price-history").status_code == 200
    response = client.patch(url, json={"status": "paused"}, headers=supplier.headers)
    assert response.get_json()["status"] == "paused"

    other = factory.actor(Role.SUPPLIER)
    buyer = factory.actor(Role.BUYER)
    for headers in ({}, other.headers, buyer.headers):
        assert_problem(client.get(url, headers=headers), 404, code="offer-not-found")
        assert_problem(client.get(f"{url}/price-history", headers=headers), 404)
    assert client.get(url, headers=supplier.headers).status_code == 200
    operator = factory.actor(Role.OPERATOR)
    assert client.get(url, headers=operator.headers).status_code == 200
    assert client.get(f"/api/v1/products/{product.id}").get_json()["offers"] == []

    response = client.patch(url, json={"status": "active"}, headers=supplier.headers)
    assert response.get_json()["status"] == "active"
    assert len(client.get(f"/api/v1/products/{product.id}").get_json()["offers"]) == 1


def test_another_supplier_cannot_change_an_offer(client, factory, db, supplier, product):
    offer = client.post(
        "/api/v1/offers", json=offer_body(product), headers=supplier.headers
    ).get_json()
    other = factory.actor(Role.SUPPLIER)
    url = f"/api/v1/offers/{offer['id']}"
    assert_problem(client.patch(url, json={"pack_price_pence": 1}, headers=other.headers), 404)
    buyer = factory.actor(Role.BUYER)
    assert_problem(client.patch(url, json={"pack_price_pence": 1}, headers=buyer.headers), 403)
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    assert db.get(Offer, offer["id"]).pack_price_pence == 1250
    operator = factory.actor(Role.OPERATOR)
    response = client.patch(url, json={"pack_price_pence": 1240}, headers=operator.headers)
    assert response.get_json()["pack_price_pence"] == 1240


def test_offer_list_shows_only_the_callers_offers(client, factory, make, supplier, product):
    other = factory.actor(Role.SUPPLIER)
    second = make.product(name="Catheter", category_code="33141200")
    mine = make.offer(supplier, product, supplier_sku="A")
    make.offer(supplier, second, supplier_sku="B", status="paused")
    theirs = make.offer(other, product)

    def ids(actor, query=""):
        response = client.get(f"/api/v1/offers?{query}", headers=actor.headers)
        assert response.status_code == 200, response.get_json()
        return {o["id"] for o in response.get_json()["items"]}

    assert len(ids(supplier)) == 2
    assert ids(supplier, "status=active") == {mine.id}
    assert ids(supplier, "category=33141110") == {mine.id}
    assert ids(supplier, f"supplier_id={other.org.id}") == ids(supplier)
    assert ids(other) == {theirs.id}
    operator = factory.actor(Role.OPERATOR)
    assert len(ids(operator)) == 3
    assert ids(operator, f"supplier_id={other.org.id}") == {theirs.id}
    assert ids(operator, "supplier_sku=A") == {mine.id}
    assert_problem(client.get("/api/v1/offers"), 401)


def test_duplicate_supplier_sku_is_409(client, make, supplier, product):
    second = make.product(name="Catheter", category_code="33141200")
    make.offer(supplier, product, supplier_sku="SKU-1")
    response = client.post(
        "/api/v1/offers",
        json={
            "product_id": second.id,
            "pack_price_pence": 100,
            "vat_rate_percent": 0,
            "supplier_sku": "SKU-1",
        },
        headers=supplier.headers,
    )
    assert_problem(response, 409, code="duplicate-supplier-sku")


def test_unknown_product_in_an_offer_is_422(client, supplier, categories):
    response = client.post(
        "/api/v1/offers",
        json={"product_id": "prd_nope", "pack_price_pence": 100, "vat_rate_percent": 20},
        headers=supplier.headers,
    )
    assert "product_id" in assert_problem(response, 422)["errors"]
