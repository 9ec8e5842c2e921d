"""What other domains rely on: the search hook is called on every change, and the OpenAPI
document describes the catalogue."""

from __future__ import annotations

import pytest
from openapi_spec_validator import validate

from marketplace.accounts.models import Role
from marketplace.catalog import service as catalog
from marketplace.db import unit_of_work


@pytest.fixture
def changes(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(
        catalog, "product_changed", lambda _session, product_id: seen.append(product_id)
    )
    return seen


def test_every_product_and_offer_change_reaches_search(
    client, factory, make, session_factory, changes
):
    supplier = factory.actor(Role.SUPPLIER)
    product = make.product(supplier)
    assert changes == [product.id]
    offer = make.offer(supplier, product, pack_price_pence=500, stock=5)
    url = f"/api/v1/offers/{offer.id}"
    for body in ({"pack_price_pence": 450}, {"status": "paused"}, {"stock": 9}):
        assert client.patch(url, json=body, headers=supplier.headers).status_code == 200
    client.patch(
        f"/api/v1/products/{product.id}", json={"name": "Renamed"}, headers=supplier.headers
    )
    assert changes == [product.id] * 6
    client.patch(url, json={"stock": 9}, headers=supplier.headers)  # unchanged: no event
    assert len(changes) == 6
    client.patch(url, json={"status": "active"}, headers=supplier.headers)
    assert changes == [product.id] * 7
    # Orders move stock: search documents hold only whether it is above zero, so a move that
    # leaves the offer in stock changes nothing there; running out and coming back do.
    with unit_of_work(session_factory) as session:
        catalog.reserve_stock(session, offer.id, 2)
        catalog.release_stock(session, offer.id, 1)
    assert changes == [product.id] * 7
    with unit_of_work(session_factory) as session:
        assert catalog.reserve_stock(session, offer.id, 8) == 0
    assert changes == [product.id] * 8
    with unit_of_work(session_factory) as session:
        catalog.release_stock(session, offer.id, 3)
    assert changes == [product.id] * 9


def test_openapi_document_is_valid_and_lists_the_catalogue(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    for path in (
        "/api/v1/categories",
        "/api/v1/products",
        "/api/v1/products/{product_id}",
        "/api/v1/offers",
        "/api/v1/offers/{offer_id}",
        "/api/v1/offers/{offer_id}/price-history",
        "/api/v1/offers/import",
    ):
        assert path in spec["paths"], path
    content = spec["paths"]["/api/v1/offers/import"]["post"]["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "text/csv"}
