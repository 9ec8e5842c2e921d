"""The budgets demo: realistic budgets, loaded twice without duplicating anything."""

from __future__ import annotations

from sqlalchemy import func, select

from marketplace.audit import AuditEvent
from marketplace.budgets import ledger
from marketplace.budgets.models import Approval, Budget, BudgetStatus, LedgerEntry, PlanLine
from marketplace.demo import load_demo


def _counts(session_factory) -> dict[str, int]:
    with session_factory() as session:
        return {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (Budget, PlanLine, LedgerEntry, Approval)
        }


def test_the_demo_budgets_load_twice_without_duplicates(session_factory):
    first = load_demo(session_factory)
    counts = _counts(session_factory)
    assert counts == {
        "budgets": 3,
        "budget_plan_lines": 5,
        "budget_ledger_entries": counts["budget_ledger_entries"],
        "budget_approvals": 1,
    }
    second = load_demo(session_factory)
    assert _counts(session_factory) == counts
    assert first.objects["budgets"] == second.objects["budgets"]

    with session_factory() as session:
        budgets = {b.reference: b for b in session.scalars(select(Budget))}
        wheelchair = budgets["PWB-001"]
        assert wheelchair.top_up_allowed
        assert wheelchair.management_type.value == "notional"
        assert (wheelchair.captured_pence, wheelchair.refunded_pence) == (18_900, 2_400)
        digital = budgets["PHB-014"]
        assert digital.management_type.value == "direct_payment"
        assert digital.representative_user_id is not None
        assert budgets["PHB-022"].status == BudgetStatus.SUSPENDED
        approval = session.scalar(select(Approval))
        assert approval.status.value == "pending"
        assert approval.budget_id == digital.id
        for budget in budgets.values():
            assert ledger.verify_ledger(session, budget.id).ok
        types = set(session.scalars(select(LedgerEntry.entry_type)))
        assert {t.value for t in types} == {"allocation", "hold", "capture", "refund"}
        assert (
            session.scalar(
                select(func.count())
                .select_from(AuditEvent)
                .where(AuditEvent.action == "budget.suspend")
            )
            == 1
        )


def test_the_demo_prints_budget_holder_examples(session_factory, client):
    context = load_demo(session_factory)
    commands = [command for _description, command in context.examples]
    wheelchair = context.objects["budgets"]["PWB-001"]
    assert any(f"/api/v1/budgets/{wheelchair}/statement" in c for c in commands)
    assert all("{token:" in c for c in commands)
    token = context.tokens["budget_holder"][1]
    response = client.get(
        f"/api/v1/budgets/{wheelchair}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.get_json()["reference"] == "PWB-001"
