"""Orders paid from a personal health budget: holds, approval, capture, release and refund, all
through the budget ledger."""

from __future__ import annotations

from sqlalchemy import func, select

from marketplace.budgets import ledger
from marketplace.budgets.models import LedgerEntry
from marketplace.orders.models import Order
from tests.orders.conftest import HOME
from tests.support import assert_problem


def budget_quote(client, shop, budget, lines, **extra):
    response = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": shop.offers[k].id, "quantity": q} for k, q in lines],
            "payment_method": "budget",
            "budget_id": budget.id,
            **extra,
        },
        headers=shop.holder.headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def place(client, shop, quote_id, key="b-1", **extra):
    return client.post(
        "/api/v1/orders",
        json={"quote_id": quote_id, "delivery_address": HOME, **extra},
        headers=shop.holder.headers | {"Idempotency-Key": key},
    )


def balances(client, shop, budget):
    return client.get(f"/api/v1/budgets/{budget.id}", headers=shop.holder.headers).get_json()[
        "balances"
    ]


def test_budget_order_holds_then_captures_then_refunds(client, shop, session_factory):
    budget = shop.budget()
    q = budget_quote(client, shop, budget, [("chair", 1)])
    assert q["budget_check"]["verdict"] == "allowed"
    assert q["lines"][0]["budget_check"]["verdict"] == "allowed"
    assert q["budget_pence"] == 42_000
    response = place(client, shop, q["id"])
    assert response.status_code == 201, response.get_json()
    placed = response.get_json()
    assert placed["status"] == "placed"
    before = balances(client, shop, budget)
    assert before["held_pence"] == 42_000
    assert before["available_pence"] == 70_000 - 42_000

    so_id = placed["supplier_orders"][0]["id"]
    for action in ("accept", "dispatch", "deliver"):
        r = client.post(
            f"/api/v1/supplier-orders/{so_id}/{action}",
            json={},
            headers=shop.other_supplier.headers,
        )
        assert r.status_code == 200, r.get_json()
    after = balances(client, shop, budget)
    assert after["held_pence"] == 0
    assert after["spent_pence"] == 42_000

    refund = client.post(
        f"/api/v1/supplier-orders/{so_id}/refund",
        json={"amount_pence": 2_000, "reason": "Cushion missing"},
        headers=shop.other_supplier.headers,
    )
    assert refund.status_code == 200, refund.get_json()
    assert refund.get_json()["refunded_pence"] == 2_000
    assert balances(client, shop, budget)["available_pence"] == 70_000 - 40_000
    too_much = client.post(
        f"/api/v1/supplier-orders/{so_id}/refund",
        json={"amount_pence": 40_001, "reason": "x"},
        headers=shop.other_supplier.headers,
    )
    assert_problem(too_much, 409, code="refund-too-large")
    with session_factory() as session:
        assert ledger.verify_ledger(session, budget.id).ok


def test_order_above_the_threshold_waits_for_approval_then_is_placed(client, shop):
    budget = shop.budget(threshold=30_000)
    q = budget_quote(client, shop, budget, [("chair", 1)])
    assert q["budget_check"]["verdict"] == "needs_approval"
    placed = place(client, shop, q["id"]).get_json()
    assert placed["status"] == "pending_approval"
    assert placed["supplier_orders"][0]["status"] == "pending_approval"
    assert balances(client, shop, budget)["held_pence"] == 42_000
    so_id = placed["supplier_orders"][0]["id"]
    early = client.post(
        f"/api/v1/supplier-orders/{so_id}/accept", json={}, headers=shop.other_supplier.headers
    )
    assert_problem(early, 409, code="invalid-transition")

    queue = client.get("/api/v1/approvals", headers=shop.manager.headers).get_json()["items"]
    assert [a["id"] for a in queue] == [placed["approval_id"]]
    decision = client.post(
        f"/api/v1/approvals/{placed['approval_id']}/approve",
        json={"reason": "Agreed at the review"},
        headers=shop.manager.headers,
    )
    assert decision.status_code == 200, decision.get_json()
    now = client.get(f"/api/v1/orders/{placed['id']}", headers=shop.holder.headers).get_json()
    assert now["status"] == "placed"
    assert now["supplier_orders"][0]["status"] == "placed"


def test_rejected_approval_releases_the_hold_and_the_stock(client, shop):
    budget = shop.budget(threshold=30_000)
    placed = place(
        client, shop, budget_quote(client, shop, budget, [("chair", 1)])["id"]
    ).get_json()
    assert shop.stock("chair") == 4
    decision = client.post(
        f"/api/v1/approvals/{placed['approval_id']}/reject",
        json={"reason": "Not in the agreed plan"},
        headers=shop.manager.headers,
    )
    assert decision.status_code == 200, decision.get_json()
    now = client.get(f"/api/v1/orders/{placed['id']}", headers=shop.holder.headers).get_json()
    assert now["status"] == "rejected"
    assert balances(client, shop, budget)["held_pence"] == 0
    assert shop.stock("chair") == 5


def test_cancelling_a_budget_order_releases_the_hold(client, shop):
    budget = shop.budget()
    placed = place(client, shop, budget_quote(client, shop, budget, [("app", 2)])["id"]).get_json()
    assert balances(client, shop, budget)["held_pence"] == 9_998
    cancelled = client.post(
        f"/api/v1/orders/{placed['id']}/cancel", json={}, headers=shop.holder.headers
    )
    assert cancelled.status_code == 200, cancelled.get_json()
    assert balances(client, shop, budget)["held_pence"] == 0


def test_a_budget_that_cannot_pay_refuses_the_order_and_writes_nothing(client, shop, db):
    budget = shop.budget(wheelchair_pence=10_000)
    q = budget_quote(client, shop, budget, [("chair", 1)])
    assert q["budget_check"]["verdict"] == "refused"
    assert_problem(place(client, shop, q["id"]), 409, code="budget-refused")
    db.rollback()
    assert db.scalar(select(func.count(Order.id))) == 0
    assert shop.stock("chair") == 5
    holds = db.scalar(select(func.count(LedgerEntry.id)).where(LedgerEntry.entry_type == "hold"))
    assert holds == 0


def test_other_people_cannot_use_or_see_the_budget(client, shop):
    budget = shop.budget()
    stranger = shop.factory.actor(shop.holder.user.role, shop.holder.org)
    response = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": shop.offers["app"].id, "quantity": 1}],
            "payment_method": "budget",
            "budget_id": budget.id,
        },
        headers=stranger.headers,
    )
    assert_problem(response, 404)
    placed = place(client, shop, budget_quote(client, shop, budget, [("app", 1)])["id"]).get_json()
    assert_problem(client.get(f"/api/v1/orders/{placed['id']}", headers=stranger.headers), 404)
    assert (
        client.get(f"/api/v1/orders/{placed['id']}", headers=shop.manager.headers).status_code
        == 200
    )
    assert_problem(client.get(f"/api/v1/orders/{placed['id']}", headers=shop.buyer.headers), 404)
