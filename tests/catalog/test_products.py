"""Categories and products through the API: GTINs, units, assurance, permissions, filters."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from marketplace.accounts.models import OrgType, Role
from marketplace.audit import AuditEvent
from marketplace.catalog import service as catalog
from marketplace.catalog.gtin import check_digit, gtin_problem, normalise_gtin
from marketplace.catalog.models import Product
from tests.catalog.conftest import GTIN_BANDAGE, GTIN_BANDAGE_2
from tests.support import assert_problem

PRODUCT = {
    "gtin": GTIN_BANDAGE,
    "name": "Profore #4 latex free bandage 10cm x 2.5m",
    "manufacturer": "Smith & Nephew Healthcare Ltd",
    "category_code": "33141113",
    "unit_of_measure": "H87",
    "units_per_pack": 1,
    "attributes": {"length_m": 2.5, "width_cm": 10, "latex_free": True},
}


def product_count(db) -> int:
    return db.scalar(select(func.count()).select_from(Product))


# --- GTIN ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "gtin",
    [
        "96385074",
        "036000291452",
        "4006381333931",
        "5000223456030",
        "06955901200193",
        "10012345678902",
    ],
)
def test_valid_gtins_of_each_length(gtin):
    assert gtin_problem(gtin) is None
    assert len(normalise_gtin(gtin)) == 14


@pytest.mark.parametrize(
    ("gtin", "reason"),
    [
        ("5000223456031", "check digit"),
        ("4006381333932", "check digit"),
        ("96385075", "check digit"),
        ("1234567", "8, 12, 13 or 14"),
        ("12345678901", "8, 12, 13 or 14"),
        ("123456789012345", "8, 12, 13 or 14"),
        ("50002234560AB", "digits only"),
        ("1234567\u00b2", "digits only"),  # str.isdigit() says yes
        ("".join(chr(0xFF10 + int(d)) for d in "5000223456030"), "digits only"),  # full-width
    ],
)
def test_invalid_gtins_are_explained(gtin, reason):
    assert reason in gtin_problem(gtin)


def test_check_digit_matches_gs1_example():
    assert check_digit("400638133393") == 1


def test_create_product_stores_the_normalised_gtin(client, factory, categories, db):
    supplier = factory.actor(Role.SUPPLIER)
    response = client.post("/api/v1/products", json=PRODUCT, headers=supplier.headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["gtin"] == "0" + GTIN_BANDAGE
    assert body["category"] == {"code": "33141113", "name": "Bandages", "kind": "commodity"}
    assert body["attributes"]["latex_free"] is True
    assert body["offers"] == []
    stored = db.get(Product, body["id"])
    assert stored.created_by_supplier_id == supplier.org.id
    assert (
        db.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.object_id == body["id"])
        )
        == 1
    )


@pytest.mark.parametrize("gtin", [GTIN_BANDAGE, "0" + GTIN_BANDAGE])
def test_duplicate_gtin_is_409_with_the_existing_product(client, factory, categories, db, gtin):
    supplier = factory.actor(Role.SUPPLIER)
    first = client.post("/api/v1/products", json=PRODUCT, headers=supplier.headers).get_json()
    other = factory.actor(Role.SUPPLIER)
    response = client.post(
        "/api/v1/products", json={**PRODUCT, "gtin": gtin}, headers=other.headers
    )
    body = assert_problem(response, 409, code="duplicate-gtin")
    assert body["existing_product_id"] == first["id"]
    assert product_count(db) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"gtin": "5000223456031"}, "gtin"),
        ({"gtin": "123"}, "gtin"),
        ({"category_code": "NOPE"}, "category_code"),
        ({"unit_of_measure": "ZZZ"}, "unit_of_measure"),
        ({"units_per_pack": 0}, "units_per_pack"),
        ({"units_per_pack": 2.5}, "units_per_pack"),
        ({"units_per_pack": "10"}, "units_per_pack"),
        ({"name": ""}, "name"),
        ({"assurance": {"dtac_passed": "yes"}}, "assurance"),
        ({"assurance": {"nice_evidence_tier": "D"}}, "assurance"),
        ({"assurance": {"ukca_ce_marking": ["UKCA", "UKCA"]}}, "assurance"),
        ({"assurance": {"ukca_ce_marking": "CE"}}, "assurance"),
        ({"assurance": {"dtac_assessed_on": "12/03/2026"}}, "assurance"),
        ({"assurance": {"stars": 5}}, "assurance"),
        ({"attributes": {"size": ["S", "M"]}}, "attributes"),
    ],
)
def test_invalid_product_is_422_naming_the_field(client, factory, categories, db, change, field):
    supplier = factory.actor(Role.SUPPLIER)
    response = client.post("/api/v1/products", json={**PRODUCT, **change}, headers=supplier.headers)
    body = assert_problem(response, 422)
    assert field in body["errors"], body
    assert product_count(db) == 0


def test_assurance_fields_for_a_digital_tool(client, factory, categories):
    operator = factory.actor(Role.OPERATOR)
    assurance = {
        "dtac_passed": True,
        "dtac_assessed_on": "2026-03-12",
        "nice_evidence_tier": "C",
        "ukca_ce_marking": ["UKCA", "CE"],
        "mhra_device_class": "I",
        "dspt_compliant": True,
    }
    response = client.post(
        "/api/v1/products",
        json={
            "name": "Digital CBT programme for insomnia",
            "category_code": "48180000",
            "unit_of_measure": "E48",
            "assurance": assurance,
        },
        headers=operator.headers,
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["assurance"] == assurance
    assert body["gtin"] is None
    assert body["category"]["kind"] == "digital_tool"


@pytest.mark.parametrize("role", [Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER])
def test_other_roles_cannot_create_products(client, factory, categories, db, role):
    actor = factory.actor(role)
    assert_problem(client.post("/api/v1/products", json=PRODUCT, headers=actor.headers), 403)
    assert_problem(client.post("/api/v1/products", json=PRODUCT), 401)
    assert product_count(db) == 0


# --- reading ------------------------------------------------------------------------------------


def test_product_shows_active_offers_cheapest_first(client, factory, make):
    product = make.product(gtin=GTIN_BANDAGE, units_per_pack=10)
    large = factory.actor(Role.SUPPLIER, factory.org(OrgType.SUPPLIER, name="Large Ltd"))
    sme = factory.actor(Role.SUPPLIER)
    paused = factory.actor(Role.SUPPLIER)
    make.offer(
        large,
        product,
        pack_price_pence=256,
        price_breaks=[{"min_qty": 10, "pack_price_pence": 230}],
    )
    make.offer(sme, product, pack_price_pence=199)
    make.offer(paused, product, pack_price_pence=100, status="paused")
    body = client.get(f"/api/v1/products/{product.id}").get_json()
    assert [o["pack_price_pence"] for o in body["offers"]] == [199, 256]
    cheapest, dearer = body["offers"]
    assert cheapest["unit_price_pence"] == 19.9
    assert cheapest["supplier"]["id"] == sme.org.id
    assert set(cheapest["supplier"]) == {"id", "name", "is_sme"}
    assert dearer["supplier"]["name"] == "Large Ltd"
    assert dearer["price_breaks"] == [
        {"min_qty": 10, "pack_price_pence": 230, "unit_price_pence": 23.0}
    ]
    assert dearer["vat_rate_percent"] == 20
    for key in ("stock", "lead_time_days", "min_order_qty"):
        assert isinstance(cheapest[key], int)


def test_unknown_product_is_404(client, categories):
    assert_problem(client.get("/api/v1/products/prd_nope"), 404, code="product-not-found")


def test_categories_tree_is_nested_and_public(client, categories):
    response = client.get("/api/v1/categories")
    assert response.status_code == 200
    roots = {node["code"]: node for node in response.get_json()["items"]}
    consumables = roots["33140000"]
    dressings = next(c for c in consumables["children"] if c["code"] == "33141110")
    assert [c["code"] for c in dressings["children"]] == ["33141113"]
    excluded = roots["MKT-EXCLUDED"]
    assert excluded["phb_excluded"] is True
    assert {c["code"] for c in excluded["children"]} >= {"15910000", "MKT-TOBACCO"}
    wheelchairs = roots["33193000"]
    assert wheelchairs["kind"] == "device"
    assert wheelchairs["phb_eligible"] is True
    assert wheelchairs["scheme"] == "CPV"
    assert wheelchairs["scheme_code"] == "33193000-9"
    for key in (
        "code",
        "name",
        "kind",
        "phb_eligible",
        "phb_excluded",
        "scheme",
        "scheme_code",
        "children",
    ):
        assert key in consumables


def test_product_list_filters_by_category_with_descendants(client, factory, make, db):
    dressing = make.product(name="Foam dressing", category_code="33141110")
    bandage = make.product(name="Cohesive bandage", category_code="33141113")
    make.product(name="Nelaton catheter", category_code="33141200")
    make.product(name="Rollator", category_code="33141720", unit_of_measure="EA")

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/products?{query}")
        assert response.status_code == 200, response.get_json()
        return [p["name"] for p in response.get_json()["items"]]

    assert names("category=33141110") == [bandage.name, dressing.name]
    assert names("category=33141113") == [bandage.name]
    assert len(names("category=33140000")) == 3
    assert names("kind=device") == ["Rollator"]
    assert_problem(client.get("/api/v1/products?category=NOPE"), 422)
    subtree = catalog.category_subtree_ids(db, "33141110")
    assert len(subtree) == 2


def test_product_list_filters_by_supplier_and_pages(client, factory, make):
    supplier = factory.actor(Role.SUPPLIER)
    products = [make.product(name=f"Dressing {i:02d}") for i in range(7)]
    for product in products[:3]:
        make.offer(supplier, product, pack_price_pence=500)
    listed = client.get(f"/api/v1/products?supplier_id={supplier.org.id}").get_json()["items"]
    assert [p["name"] for p in listed] == ["Dressing 00", "Dressing 01", "Dressing 02"]
    assert listed[0]["offer_count"] == 1
    assert listed[0]["lowest_pack_price_pence"] == 500
    seen, cursor = [], None
    while True:
        url = "/api/v1/products?limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(url).get_json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [p.id for p in products]


# --- changing -----------------------------------------------------------------------------------


def test_creator_may_patch_until_another_supplier_lists_it(client, factory, make):
    creator = factory.actor(Role.SUPPLIER)
    product = make.product(creator, gtin=GTIN_BANDAGE_2)
    response = client.patch(
        f"/api/v1/products/{product.id}",
        json={"description": "10cm x 2.5m"},
        headers=creator.headers,
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["description"] == "10cm x 2.5m"

    stranger = factory.actor(Role.SUPPLIER)
    assert_problem(
        client.patch(
            f"/api/v1/products/{product.id}", json={"name": "x"}, headers=stranger.headers
        ),
        403,
    )
    make.offer(stranger, product)
    body = assert_problem(
        client.patch(f"/api/v1/products/{product.id}", json={"name": "x"}, headers=creator.headers),
        403,
        code="product-shared",
    )
    assert "operator" in body["detail"]
    operator = factory.actor(Role.OPERATOR)
    response = client.patch(
        f"/api/v1/products/{product.id}", json={"name": "Renamed"}, headers=operator.headers
    )
    assert response.get_json()["name"] == "Renamed"


def test_benchmark_exclusion_is_operator_only_and_needs_a_reason(client, factory, make, db):
    creator = factory.actor(Role.SUPPLIER)
    product = make.product(creator)
    url = f"/api/v1/products/{product.id}"
    assert_problem(
        client.patch(
            url,
            json={"benchmark_excluded": True, "benchmark_excluded_reason": "x"},
            headers=creator.headers,
        ),
        403,
        code="operator-only",
    )
    operator = factory.actor(Role.OPERATOR)
    body = assert_problem(
        client.patch(url, json={"benchmark_excluded": True}, headers=operator.headers), 422
    )
    assert "benchmark_excluded_reason" in body["errors"]
    response = client.patch(
        url,
        json={"benchmark_excluded": True, "benchmark_excluded_reason": "Special order item"},
        headers=operator.headers,
    )
    assert response.get_json()["benchmark_excluded"] is True
    db.rollback()  # a fresh snapshot: end the read transaction, expire everything
    stored = db.get(Product, product.id)
    assert (stored.benchmark_excluded, stored.benchmark_excluded_reason) == (
        True,
        "Special order item",
    )
    response = client.patch(url, json={"benchmark_excluded": False}, headers=operator.headers)
    assert response.get_json()["benchmark_excluded_reason"] is None


def test_patch_to_an_existing_gtin_is_409(client, factory, make):
    operator = factory.actor(Role.OPERATOR)
    first = make.product(gtin=GTIN_BANDAGE)
    second = make.product(gtin=GTIN_BANDAGE_2)
    body = assert_problem(
        client.patch(
            f"/api/v1/products/{second.id}", json={"gtin": GTIN_BANDAGE}, headers=operator.headers
        ),
        409,
        code="duplicate-gtin",
    )
    assert body["existing_product_id"] == first.id


def test_unchanged_product_patch_writes_no_audit(client, factory, make, db):
    operator = factory.actor(Role.OPERATOR)
    product = make.product(name="Same")
    before = db.scalar(select(func.count()).select_from(AuditEvent))
    response = client.patch(
        f"/api/v1/products/{product.id}", json={"name": "Same"}, headers=operator.headers
    )
    assert response.status_code == 200
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_a_gtin_in_other_digits_is_a_422_and_cannot_duplicate_one(client, factory, categories, db):
    supplier = factory.actor(Role.SUPPLIER)
    full_width = "".join(chr(0xFF10 + int(d)) for d in GTIN_BANDAGE)
    for gtin in ("1234567\u00b2", full_width):
        response = client.post(
            "/api/v1/products", json={**PRODUCT, "gtin": gtin}, headers=supplier.headers
        )
        assert_problem(response, 422)
        assert "gtin" in response.get_json()["errors"]
    assert db.scalar(select(func.count()).select_from(Product)) == 0
