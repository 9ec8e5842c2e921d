"""The budgets API: set-up, money, life cycle, lists, the check, the report; bad input."""

from __future__ import annotations

import csv
import io

import pytest
from sqlalchemy import func, select

from marketplace.audit import AuditEvent
from marketplace.budgets.models import Budget, LedgerEntry
from tests.budgets.conftest import DIGITAL_LINE, WHEELCHAIR_LINE
from tests.support import assert_problem


def _count(session_factory, model) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def budget_body(world, **overrides):
    body = {
        "reference": "PHB-0001",
        "holder_id": world.holder.user.id,
        "management_type": "direct_payment",
        "period_start": "2026-04-01",
        "period_end": "2027-03-31",
        "approval_threshold_pence": 50_000,
        "top_up_allowed": True,
        "allocation_pence": 10_000,
        "plan_lines": [WHEELCHAIR_LINE, DIGITAL_LINE],
    }
    body.update(overrides)
    return body


def test_a_manager_sets_up_a_budget_with_its_care_plan(client, world, session_factory):
    response = client.post(
        "/api/v1/budgets", json=budget_body(world), headers=world.manager.headers
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["id"].startswith("phb_")
    assert body["holder"]["id"] == world.holder.user.id
    assert body["commissioner_id"] == world.commissioner.id
    assert body["status"] == "active"
    assert body["balances"] == {
        "allocated_pence": 180_000,
        "adjusted_pence": 0,
        "held_pence": 0,
        "captured_pence": 0,
        "refunded_pence": 0,
        "spent_pence": 0,
        "available_pence": 180_000,
    }
    lines = {line["description"]: line for line in body["plan_lines"]}
    wheelchairs = lines[WHEELCHAIR_LINE["description"]]
    assert wheelchairs["remaining_pence"] == 150_000
    assert [c["code"] for c in wheelchairs["categories"]] == ["33193000"]
    with session_factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.object_id == body["id"])
        ).all()
    assert actions.count("budget.create") == 1
    assert actions.count("budget.plan_line.create") == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"approval_threshold_pence": 2.5}, "approval_threshold_pence"),
        ({"approval_threshold_pence": "100"}, "approval_threshold_pence"),
        ({"approval_threshold_pence": True}, "approval_threshold_pence"),
        ({"approval_threshold_pence": -1}, "approval_threshold_pence"),
        ({"allocation_pence": 1e3}, "allocation_pence"),
        ({"period_end": "2026-03-31"}, "period_end"),
        ({"management_type": "cash"}, "management_type"),
        ({"management_type": "third_party"}, "managing_organisation_id"),
        ({"holder_id": "usr_nobody"}, "holder_id"),
        ({"plan_lines": [{**DIGITAL_LINE, "amount_pence": 10.0}]}, "plan_lines"),
        ({"plan_lines": [{**DIGITAL_LINE, "category_codes": ["NOPE"]}]}, "category_codes"),
        ({"plan_lines": [{**DIGITAL_LINE, "category_codes": ["15910000"]}]}, "category_codes"),
        ({"plan_lines": [{**DIGITAL_LINE, "category_codes": []}]}, "plan_lines"),
    ],
)
def test_bad_budgets_are_422_and_write_nothing(client, world, session_factory, overrides, field):
    before = (_count(session_factory, Budget), _count(session_factory, LedgerEntry))
    response = client.post(
        "/api/v1/budgets", json=budget_body(world, **overrides), headers=world.manager.headers
    )
    body = assert_problem(response, 422)
    assert field in str(body.get("errors")), body
    assert (_count(session_factory, Budget), _count(session_factory, LedgerEntry)) == before


def test_a_holder_of_another_commissioner_cannot_be_given_a_budget(client, world, factory):
    from marketplace.accounts.models import Role

    stranger = factory.actor(Role.BUDGET_HOLDER)
    response = client.post(
        "/api/v1/budgets",
        json=budget_body(world, holder_id=stranger.user.id),
        headers=world.manager.headers,
    )
    assert_problem(response, 422)


def test_a_reference_is_unique_within_the_commissioner(client, world):
    client.post("/api/v1/budgets", json=budget_body(world), headers=world.manager.headers)
    response = client.post(
        "/api/v1/budgets", json=budget_body(world), headers=world.manager.headers
    )
    assert_problem(response, 409, code="duplicate-reference")


def test_plan_lines_allocations_and_adjustments(client, world):
    budget = world.budget(allocation_pence=5_000)
    h = world.manager.headers
    response = client.post(
        f"/api/v1/budgets/{budget.id}/plan-lines",
        json={
            "description": "Monitor my blood pressure",
            "category_codes": ["33195000"],
            "amount_pence": 8_000,
        },
        headers=h,
    )
    assert response.status_code == 201
    line = response.get_json()
    assert line["remaining_pence"] == 8_000

    response = client.post(
        f"/api/v1/budgets/{budget.id}/allocations",
        json={"amount_pence": 2_000, "plan_line_id": line["id"], "reason": "Annual review"},
        headers=h,
    )
    assert response.status_code == 201
    assert response.get_json()["entry_type"] == "allocation"

    response = client.post(
        f"/api/v1/budgets/{budget.id}/adjustments",
        json={"amount_pence": -3_000, "reason": "Clawback of unspent money"},
        headers=h,
    )
    assert response.status_code == 201
    entry = response.get_json()
    assert (entry["amount_pence"], entry["effect_pence"]) == (-3_000, -3_000)

    body = client.get(f"/api/v1/budgets/{budget.id}", headers=h).get_json()
    assert body["balances"]["available_pence"] == 5_000 + 8_000 + 2_000 - 3_000
    assert body["plan_lines"][0]["remaining_pence"] == 10_000


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("allocations", {"amount_pence": 2.5}),
        ("allocations", {"amount_pence": "100"}),
        ("allocations", {"amount_pence": 0}),
        ("allocations", {"amount_pence": True}),
        ("adjustments", {"amount_pence": 100}),
        ("adjustments", {"amount_pence": 0, "reason": "x"}),
        ("adjustments", {"amount_pence": 1e2, "reason": "x"}),
        ("holds", {"amount_pence": 10.5}),
        ("holds", {"amount_pence": -5}),
        ("holds", {"amount_pence": 100, "plan_line_id": "pln_other"}),
        ("holds", {"amount_pence": 100, "category_code": "NOPE"}),
        ("holds", {"amount_pence": 100, "surprise": 1}),
    ],
)
def test_money_endpoints_take_strict_integers(client, world, session_factory, path, payload):
    budget = world.budget(allocation_pence=5_000)
    before = _count(session_factory, LedgerEntry)
    response = client.post(
        f"/api/v1/budgets/{budget.id}/{path}", json=payload, headers=world.manager.headers
    )
    assert_problem(response, 422)
    assert _count(session_factory, LedgerEntry) == before


def test_holds_and_releases(client, world):
    budget = world.budget(allocation_pence=5_000)
    h = world.manager.headers
    response = client.post(
        f"/api/v1/budgets/{budget.id}/holds",
        json={"amount_pence": 3_000, "order_ref": "ORD-1", "category_code": "33141720"},
        headers=h,
    )
    assert response.status_code == 201
    hold = response.get_json()
    assert hold["category"]["code"] == "33141720"
    assert hold["effect_pence"] == -3_000

    response = client.post(
        f"/api/v1/budgets/{budget.id}/holds", json={"amount_pence": 3_000}, headers=h
    )
    body = assert_problem(response, 409, code="insufficient-budget")
    assert (body["available_pence"], body["shortfall_pence"]) == (2_000, 1_000)

    path = f"/api/v1/budgets/{budget.id}/holds/{hold['id']}/release"
    response = client.post(path, json={"reason": "Order cancelled"}, headers=h)
    assert response.status_code == 201
    assert response.get_json()["refers_to_id"] == hold["id"]
    assert_problem(client.post(path, json={}, headers=h), 409, code="hold-already-settled")
    body = client.get(f"/api/v1/budgets/{budget.id}", headers=h).get_json()
    assert body["balances"]["available_pence"] == 5_000


def test_suspend_reactivate_close(client, world):
    budget = world.budget(allocation_pence=5_000)
    h = world.manager.headers
    base = f"/api/v1/budgets/{budget.id}"
    assert_problem(client.post(f"{base}/suspend", json={}, headers=h), 422)
    response = client.post(f"{base}/suspend", json={"reason": "Care plan review"}, headers=h)
    assert response.get_json()["status"] == "suspended"
    assert response.get_json()["status_reason"] == "Care plan review"
    assert_problem(
        client.post(f"{base}/holds", json={"amount_pence": 100}, headers=h),
        409,
        code="budget-not-active",
    )
    assert_problem(
        client.post(f"{base}/suspend", json={"reason": "again"}, headers=h),
        409,
        code="invalid-status-change",
    )
    assert (
        client.post(f"{base}/reactivate", json={"reason": "Reviewed"}, headers=h).get_json()[
            "status"
        ]
        == "active"
    )
    assert (
        client.post(f"{base}/close", json={"reason": "Moved away"}, headers=h).get_json()["status"]
        == "closed"
    )
    assert_problem(
        client.post(f"{base}/reactivate", json={"reason": "x"}, headers=h),
        409,
        code="invalid-status-change",
    )


def test_list_budgets_paginates_and_filters(client, world):
    for _ in range(3):
        world.budget()
    suspended = world.budget(holder=world.other_holder)
    client.post(
        f"/api/v1/budgets/{suspended.id}/suspend",
        json={"reason": "x"},
        headers=world.manager.headers,
    )
    seen, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            "/api/v1/budgets", query_string=query, headers=world.manager.headers
        ).get_json()
        seen.extend(b["id"] for b in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 4
    page = client.get(
        "/api/v1/budgets", query_string={"status": "suspended"}, headers=world.manager.headers
    ).get_json()
    assert [b["id"] for b in page["items"]] == [suspended.id]
    page = client.get(
        "/api/v1/budgets",
        query_string={"holder_id": world.other_holder.user.id},
        headers=world.manager.headers,
    ).get_json()
    assert [b["id"] for b in page["items"]] == [suspended.id]
    assert "plan_lines" not in page["items"][0]
    assert_problem(
        client.get("/api/v1/budgets", query_string={"limit": "2.5"}, headers=world.manager.headers),
        422,
    )
    assert_problem(
        client.get(
            "/api/v1/budgets", query_string={"cursor": "nonsense"}, headers=world.manager.headers
        ),
        422,
    )


def test_ledger_is_paginated_newest_first(client, world):
    budget = world.budget(allocation_pence=10_000)
    for _ in range(4):
        client.post(
            f"/api/v1/budgets/{budget.id}/holds",
            json={"amount_pence": 100},
            headers=world.manager.headers,
        )
    seqs, cursor = [], None
    while True:
        query = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(
            f"/api/v1/budgets/{budget.id}/ledger", query_string=query, headers=world.holder.headers
        ).get_json()
        seqs.extend(e["seq"] for e in page["items"])
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seqs == [5, 4, 3, 2, 1]
    page = client.get(
        f"/api/v1/budgets/{budget.id}/ledger",
        query_string={"order": "asc", "entry_type": "allocation"},
        headers=world.holder.headers,
    ).get_json()
    assert [(e["seq"], e["entry_type"]) for e in page["items"]] == [(1, "allocation")]


def test_check_prices_a_basket_from_the_catalogue(client, world):
    budget = world.budget(
        plan_lines=[WHEELCHAIR_LINE, DIGITAL_LINE], threshold=155_000, top_up=True
    )
    chair = world.offer("33193121", 150_000, vat="0", name="Lightweight powered chair")
    app = world.offer(
        "48180000", 1_000, vat="20", price_breaks=[{"min_qty": 3, "pack_price_pence": 800}]
    )
    speaker = world.offer("MKT-VOICE", 5_000, vat="20")
    gin = world.offer("15910000", 2_000, vat="20")
    response = client.post(
        f"/api/v1/budgets/{budget.id}/check",
        json={
            "items": [
                {"offer_id": chair.id, "quantity": 1},
                {"product_id": app.product_id, "quantity": 3},
                {"offer_id": speaker.id, "quantity": 1},
                {"offer_id": gin.id, "quantity": 1},
            ]
        },
        headers=world.holder.headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["verdict"] == "refused"
    items = body["items"]
    assert [i["amount_pence"] for i in items] == [150_000, 2_880, 6_000, 2_400]
    assert [i["verdict"] for i in items] == ["allowed", "allowed", "needs_approval", "refused"]
    assert [r["code"] for r in items[3]["reasons"]] == ["category-excluded"]
    assert items[2]["reasons"][0]["message"].endswith("needs to approve it first.")
    assert items[0]["plan_line_id"] == budget.plan_lines[0].id
    assert [r["code"] for r in body["reasons"]] == ["basket-above-approval-threshold"]


@pytest.mark.parametrize(
    "items",
    [
        [],
        [{"offer_id": "off_x", "quantity": 1}],
        [{"offer_id": "x", "product_id": "y", "quantity": 1}],
        [{"quantity": 1}],
        [{"offer_id": "off_x", "quantity": 1.5}],
        [{"offer_id": "off_x", "quantity": 0}],
    ],
)
def test_check_rejects_bad_baskets(client, world, items):
    budget = world.budget()
    response = client.post(
        f"/api/v1/budgets/{budget.id}/check", json={"items": items}, headers=world.holder.headers
    )
    assert_problem(response, 422)


def test_spend_report_json_and_csv(client, world, session_factory, factory):
    from marketplace.budgets import ledger
    from marketplace.budgets.models import ManagementType

    mgr = world.manager.principal
    notional = world.budget(allocation_pence=100_000)
    direct = world.budget(allocation_pence=50_000, management_type=ManagementType.DIRECT_PAYMENT)
    with session_factory.begin() as session:
        b = session.get(Budget, notional.id)
        chair = ledger.hold(session, mgr, b, 60_000, category_id=world.categories["33193120"])
        captured = ledger.capture(session, mgr, b, chair.id).capture
        ledger.refund(session, mgr, b, captured.id, 5_000, reason="Cushion returned")
        d = session.get(Budget, direct.id)
        app = ledger.hold(
            session, world.holder.principal, d, 2_000, category_id=world.categories["48180000"]
        )
        ledger.capture(session, mgr, d, app.id)
    # Another commissioner's spend is not in this report.
    other_manager = factory.actor(world.manager.user.role)
    assert other_manager.org.id != world.commissioner.id

    response = client.get("/api/v1/budgets/spend-report", headers=world.manager.headers)
    assert response.status_code == 200
    body = response.get_json()
    by_code = {r["category_code"]: r for r in body["by_category"]}
    assert by_code["33193120"]["spent_pence"] == 55_000
    assert by_code["33193120"]["refunded_pence"] == 5_000
    assert by_code["48180000"]["spent_pence"] == 2_000
    by_type = {r["management_type"]: r for r in body["by_management_type"]}
    assert by_type["notional"]["budgets"] == 1
    assert by_type["notional"]["spent_pence"] == 55_000
    assert by_type["direct_payment"]["allocated_pence"] == 50_000
    assert by_type["third_party"]["budgets"] == 0
    assert body["totals"]["spent_pence"] == 57_000

    for kwargs in ({"query_string": {"format": "csv"}}, {"headers": {"Accept": "text/csv"}}):
        headers = {**world.manager.headers, **kwargs.pop("headers", {})}
        response = client.get("/api/v1/budgets/spend-report", headers=headers, **kwargs)
        assert response.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert {(r["dimension"], r["key"]): r["spent_pence"] for r in rows}[
            ("category", "33193120")
        ] == "55000"
        assert len([r for r in rows if r["dimension"] == "management_type"]) == 3

    empty = client.get("/api/v1/budgets/spend-report", headers=other_manager.headers).get_json()
    assert empty["by_category"] == []
    assert empty["totals"]["budgets"] == 0
    future = client.get(
        "/api/v1/budgets/spend-report",
        query_string={"from": "2999-01-01"},
        headers=world.manager.headers,
    ).get_json()
    assert future["by_category"] == []
    assert_problem(
        client.get(
            "/api/v1/budgets/spend-report",
            query_string={"from": "2026-02-01", "to": "2026-01-01"},
            headers=world.manager.headers,
        ),
        422,
    )


def test_openapi_documents_the_budget_endpoints(client):
    from openapi_spec_validator import validate

    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    holds = spec["paths"]["/api/v1/budgets/{budget_id}/holds"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in holds["parameters"])
    statement = spec["paths"]["/api/v1/budgets/{budget_id}/statement"]["get"]
    assert "text/csv" in statement["responses"]["200"]["content"]
