"""Personal health budget spending is published only as aggregates by commissioner, category and
month, and only for groups of at least ``min_group_size`` distinct people."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest

from marketplace import create_app
from marketplace.accounts.models import OrgType, Role
from marketplace.config import ConfigError, from_env
from marketplace.db import utcnow
from marketplace.orders.models import PaymentMethod, SupplierOrderStatus


@pytest.fixture
def phb(world):
    """Five people buy bandages this month (one of them twice, one more cancelled); four buy
    stockings; four people with five budgets between them buy gloves; another commissioner's
    five people bought bandages last month."""
    bandage = world.product(name="Bandage", category_code="33141113")
    stocking = world.product(name="Stocking", category_code="MKT-HOSIERY-AE")
    gloves = world.product(name="Gloves", category_code="18424300")
    offers = {
        "bandage": world.offer(world.sme, bandage, 250, vat_rate_percent=0),
        "stocking": world.offer(world.large, stocking, 1000, vat_rate_percent=0),
        "gloves": world.offer(world.large, gloves, 500, vat_rate_percent=0),
    }
    now = utcnow()

    def buy(holder, budget, item, quantity=1, *, commissioner=None, when=None):
        return world.order(
            commissioner or world.commissioner,
            holder,
            [(offers[item], quantity)],
            payment_method=PaymentMethod.BUDGET,
            budget=budget,
            created_at=when or now,
        )

    def person(n, commissioner=None, manager=None):
        holder = world.holder(
            name=f"Person {n}", email=f"person{n}@example.org", commissioner=commissioner
        )
        return holder, world.budget(holder, manager=manager)

    people = [person(n) for n in range(5)]
    for holder, budget in people:
        buy(holder, budget, "bandage", 2)
    buy(*people[0], "bandage", 1)  # a second order: still five people
    late, late_budget = person(99)
    cancelled = buy(late, late_budget, "bandage", 40)
    world.update_supplier_order(
        cancelled.supplier_orders[0].id, status=SupplierOrderStatus.CANCELLED
    )
    for holder, budget in people[:4]:
        buy(holder, budget, "stocking")
    second_budget = world.budget(people[0][0])
    for holder, budget in [*people[:4], (people[0][0], second_budget)]:
        buy(holder, budget, "gloves")
    other = world.factory.org(OrgType.COMMISSIONER, name="NHS Kent and Medway ICB", ods_code="QKS")
    other_manager = world.factory.actor(Role.BUDGET_MANAGER, other)
    last_month = now.replace(day=1) - timedelta(days=3)
    for n in range(5):
        holder, budget = person(100 + n, other, other_manager)
        buy(holder, budget, "bandage", 1, commissioner=other, when=last_month)
    return {"this_month": now.strftime("%Y-%m"), "last_month": last_month.strftime("%Y-%m")}


def test_only_groups_of_five_or_more_people_are_published(phb, client):
    body = client.get("/api/v1/open-data/phb-spending").get_json()
    assert body["min_group_size"] == 5
    assert body["items"] == [
        {
            "month": phb["last_month"],
            "commissioner_ods_code": "QKS",
            "commissioner_name": "NHS Kent and Medway ICB",
            "category_code": "33141113",
            "category_name": "Bandages",
            "people": 5,
            "orders": 5,
            "total_pence": 5 * 250,
        },
        {
            "month": phb["this_month"],
            "commissioner_ods_code": "QWO",
            "commissioner_name": "NHS West Yorkshire ICB",
            "category_code": "33141113",
            "category_name": "Bandages",
            "people": 5,
            "orders": 6,  # one person ordered twice; the cancelled order is left out
            "total_pence": (5 * 2 + 1) * 250,
        },
    ]  # stockings (4 people) and gloves (5 budgets, 4 people) are suppressed


def test_csv_has_the_same_rows(phb, client):
    json_rows = client.get("/api/v1/open-data/phb-spending").get_json()["items"]
    response = client.get("/api/v1/open-data/phb-spending", headers={"Accept": "text/csv"})
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [{k: str(v) for k, v in r.items()} for r in json_rows] == rows
    download = client.get("/api/v1/open-data/downloads/phb-spending.csv")
    assert download.get_data(as_text=True) == response.get_data(as_text=True)


def test_the_openapi_document_describes_both_answers(client):
    """The JSON answer is documented with its schema, next to the CSV one (not replaced by it)."""
    spec = client.get("/api/v1/openapi.json").get_json()
    content = spec["paths"]["/api/v1/open-data/phb-spending"]["get"]["responses"]["200"]["content"]
    assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/PhbSpending"}
    assert content["text/csv"]["schema"] == {"type": "string"}


def test_a_smaller_minimum_publishes_smaller_groups(phb, migrated):
    app = create_app(migrated.with_overrides(min_group_size=4))
    body = app.test_client().get("/api/v1/open-data/phb-spending").get_json()
    groups = {(r["commissioner_ods_code"], r["category_code"]): r["people"] for r in body["items"]}
    assert groups == {
        ("QKS", "33141113"): 5,
        ("QWO", "33141113"): 5,
        ("QWO", "MKT-HOSIERY-AE"): 4,
        ("QWO", "18424300"): 4,
    }
    app.extensions["marketplace"].engine.dispose()


def test_the_minimum_is_a_setting_with_a_floor():
    assert from_env({}).min_group_size == 5
    assert from_env({"OPEN_DATA_MIN_GROUP_SIZE": "10"}).min_group_size == 10
    for bad in ("2", "1", "0", "-5", "five"):
        with pytest.raises(ConfigError, match="OPEN_DATA_MIN_GROUP_SIZE"):
            from_env({"OPEN_DATA_MIN_GROUP_SIZE": bad})


def test_the_ocds_prefix_is_validated():
    assert from_env({}).ocds_prefix == "ocds-mkt000"
    assert from_env({"OCDS_PREFIX": "ocds-b5fd17"}).ocds_prefix == "ocds-b5fd17"
    for bad in ("ocds-ABC123", "ocds-12345", "mkt000", "ocds-1234567", "ocds-abc12!"):
        with pytest.raises(ConfigError, match="OCDS_PREFIX"):
            from_env({"OCDS_PREFIX": bad})
