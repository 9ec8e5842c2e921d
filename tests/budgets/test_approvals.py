"""The approval queue: another domain asks, the budget manager approves or rejects with a
reason, exactly once, and the asking domain hears about it through its decision handler."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from marketplace.accounts.models import Role
from marketplace.audit import AuditEvent
from marketplace.budgets import approvals, ledger
from marketplace.budgets.models import Approval, ApprovalStatus, Budget
from marketplace.budgets.rules import SpendItem, check_spend
from tests.budgets.conftest import DIGITAL_LINE
from tests.budgets.live import at_once
from tests.support import assert_problem


@pytest.fixture(autouse=True)
def _own_handlers(monkeypatch):
    """Tests register handlers of their own: give them a copy of the registry, so the orders
    domain's real handler is back in place for every other test."""
    monkeypatch.setattr(approvals, "_handlers", dict(approvals._handlers))


@pytest.fixture
def decisions():
    """A decision handler for subject type ``order``, as the orders domain would register."""
    seen: list[tuple[str, str, str]] = []

    def on_decision(session, approval, actor):
        seen.append((approval.subject_ref, approval.status.value, actor.label))

    approvals.register_decision_handler("order", on_decision)
    yield seen
    approvals.unregister_decision_handler("order")


def ask(session_factory, world, budget_id, ref="ORD-1", amount=8_000):
    """What the orders domain does for an order that check_spend says needs approval."""
    with session_factory.begin() as session:
        budget = session.get(Budget, budget_id)
        item = SpendItem(
            amount_pence=amount, category_id=world.categories["MKT-VOICE"], ref="line-1"
        )
        result = check_spend(session, budget, [item])
        assert result.verdict == "needs_approval"
        approval = approvals.request_approval(
            session,
            budget,
            ref,
            result.total_pence,
            [{"category_code": "MKT-VOICE", "amount_pence": amount, "quantity": 1}],
            result.all_reasons(),
            actor=world.holder.principal,
        )
        return approval.id


@pytest.fixture
def budget(world):
    return world.budget(
        allocation_pence=20_000,
        plan_lines=[DIGITAL_LINE],
        management_type="direct_payment",
    )


def test_a_request_waits_in_the_managers_queue(client, world, session_factory, budget):
    approval_id = ask(session_factory, world, budget.id)
    page = client.get("/api/v1/approvals", headers=world.manager.headers).get_json()
    assert [a["id"] for a in page["items"]] == [approval_id]
    item = page["items"][0]
    assert item["status"] == "pending"
    assert item["subject_type"] == "order"
    assert item["subject_ref"] == "ORD-1"
    assert item["amount_pence"] == 8_000
    assert item["holder"]["id"] == world.holder.user.id
    assert item["reasons"][0]["code"] == "outside-care-plan"
    assert item["requested_by"] == world.holder.user.email


def test_asking_twice_for_the_same_order_gives_the_same_approval(session_factory, world, budget):
    assert ask(session_factory, world, budget.id) == ask(session_factory, world, budget.id)


def test_approve_with_a_reason_calls_the_handler(client, world, session_factory, budget, decisions):
    approval_id = ask(session_factory, world, budget.id)
    path = f"/api/v1/approvals/{approval_id}/approve"
    assert_problem(client.post(path, json={}, headers=world.manager.headers), 422)
    response = client.post(
        path,
        json={"reason": "Agreed at review: helps with reminders"},
        headers=world.manager.headers,
    )
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "approved"
    assert body["decision_reason"] == "Agreed at review: helps with reminders"
    assert body["decided_by"] == world.manager.user.email
    assert body["decided_at"]
    assert decisions == [("ORD-1", "approved", world.manager.user.email)]
    pending = client.get("/api/v1/approvals", headers=world.manager.headers).get_json()
    assert pending["items"] == []
    approved = client.get(
        "/api/v1/approvals", query_string={"status": "approved"}, headers=world.manager.headers
    ).get_json()
    assert [a["id"] for a in approved["items"]] == [approval_id]
    with session_factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.object_id == approval_id)
        ).all()
    assert sorted(actions) == ["budget.approval.approved", "budget.approval.request"]


def test_reject_with_a_reason(client, world, session_factory, budget, decisions):
    approval_id = ask(session_factory, world, budget.id)
    response = client.post(
        f"/api/v1/approvals/{approval_id}/reject",
        json={"reason": "Not linked to the outcomes in the care plan"},
        headers=world.manager.headers,
    )
    assert response.get_json()["status"] == "rejected"
    assert decisions == [("ORD-1", "rejected", world.manager.user.email)]


def test_a_decision_is_made_exactly_once(client, world, session_factory, budget, decisions):
    approval_id = ask(session_factory, world, budget.id)
    h = world.manager.headers
    assert (
        client.post(
            f"/api/v1/approvals/{approval_id}/reject", json={"reason": "No"}, headers=h
        ).status_code
        == 200
    )
    response = client.post(
        f"/api/v1/approvals/{approval_id}/approve", json={"reason": "Yes"}, headers=h
    )
    body = assert_problem(response, 409, code="approval-already-decided")
    assert body["approval_status"] == "rejected"
    assert decisions == [("ORD-1", "rejected", world.manager.user.email)]


def test_concurrent_decisions_one_wins(world, session_factory, budget, decisions):
    approval_id = ask(session_factory, world, budget.id)
    from marketplace.db import begin_write
    from marketplace.errors import Conflict

    def decide(i):
        with session_factory() as session:
            begin_write(session)
            try:
                approvals.decide(
                    session,
                    world.manager.principal,
                    approval_id,
                    approve=bool(i % 2),
                    reason=f"r{i}",
                )
                session.commit()
                return "ok"
            except Conflict as error:
                session.rollback()
                return error.code

    results = at_once(8, decide)
    assert results.count("ok") == 1
    assert set(results) == {"ok", "approval-already-decided"}
    assert len(decisions) == 1


def test_a_handler_that_fails_leaves_the_approval_pending(world, session_factory, budget):
    approval_id = ask(session_factory, world, budget.id)

    def broken(session, approval, actor):
        raise RuntimeError("orders is down")

    approvals.register_decision_handler("order", broken)
    try:
        with pytest.raises(RuntimeError), session_factory.begin() as session:
            approvals.decide(
                session, world.manager.principal, approval_id, approve=True, reason="ok"
            )
    finally:
        approvals.unregister_decision_handler("order")
    with session_factory() as session:
        assert session.get(Approval, approval_id).status == ApprovalStatus.PENDING


def test_a_handler_can_release_the_orders_hold_on_rejection(client, world, session_factory, budget):
    """The orders domain's rejection path: its handler releases the hold it placed."""
    with session_factory.begin() as session:
        b = session.get(Budget, budget.id)
        held = ledger.hold(session, world.holder.principal, b, 8_000, order_ref="ORD-9")
        approval = approvals.request_approval(session, b, "ORD-9", 8_000, [], [])
        approval_id, hold_id = approval.id, held.id

    def on_decision(session, approval, actor):
        if approval.status == ApprovalStatus.REJECTED:
            ledger.release(session, actor, approval.budget, hold_id, reason="Order rejected")

    approvals.register_decision_handler("order", on_decision)
    try:
        client.post(
            f"/api/v1/approvals/{approval_id}/reject",
            json={"reason": "No"},
            headers=world.manager.headers,
        )
    finally:
        approvals.unregister_decision_handler("order")
    body = client.get(f"/api/v1/budgets/{budget.id}", headers=world.holder.headers).get_json()
    assert body["balances"]["held_pence"] == 0
    assert body["balances"]["available_pence"] == 40_000


def test_approving_needs_an_active_budget(client, world, session_factory, budget):
    approval_id = ask(session_factory, world, budget.id)
    h = world.manager.headers
    client.post(f"/api/v1/budgets/{budget.id}/suspend", json={"reason": "Review"}, headers=h)
    response = client.post(
        f"/api/v1/approvals/{approval_id}/approve", json={"reason": "ok"}, headers=h
    )
    assert_problem(response, 409, code="budget-not-active")
    response = client.post(
        f"/api/v1/approvals/{approval_id}/reject", json={"reason": "no"}, headers=h
    )
    assert response.status_code == 200


def test_only_the_commissioners_managers_see_and_decide(
    client, world, session_factory, factory, budget
):
    approval_id = ask(session_factory, world, budget.id)
    other_manager = factory.actor(Role.BUDGET_MANAGER)
    assert client.get("/api/v1/approvals", headers=other_manager.headers).get_json()["items"] == []
    for path in ("", "/approve", "/reject"):
        method = client.get if not path else client.post
        response = method(
            f"/api/v1/approvals/{approval_id}{path}",
            json={"reason": "x"},
            headers=other_manager.headers,
        )
        assert_problem(response, 404)
    for role in (Role.BUDGET_HOLDER, Role.BUYER, Role.SUPPLIER):
        actor = world.holder if role == Role.BUDGET_HOLDER else factory.actor(role)
        assert_problem(client.get("/api/v1/approvals", headers=actor.headers), 403)
        response = client.post(
            f"/api/v1/approvals/{approval_id}/approve", json={"reason": "x"}, headers=actor.headers
        )
        assert_problem(response, 403)
