"""check_spend: every rule, with its verdict and a reason for every item."""

from __future__ import annotations

from datetime import timedelta

import pytest

from marketplace.budgets import ledger, service
from marketplace.budgets.models import Budget
from marketplace.budgets.rules import SpendItem, check_spend
from marketplace.db import utcnow
from marketplace.errors import NotFound, ValidationFailed
from tests.budgets.conftest import DIGITAL_LINE, WHEELCHAIR_LINE


def check(session_factory, budget_id, items, **kwargs):
    with session_factory() as session:
        budget = session.get(Budget, budget_id)
        return check_spend(session, budget, items, **kwargs)


def codes(decision):
    return [r.code for r in decision.reasons]


@pytest.fixture
def budget(world):
    return world.budget(
        allocation_pence=0, plan_lines=[WHEELCHAIR_LINE, DIGITAL_LINE], threshold=100_000
    )


def item(world, code, amount, **kwargs):
    return SpendItem(amount_pence=amount, category_id=world.categories[code], **kwargs)


def test_an_item_the_plan_covers_is_allowed_with_a_reason(session_factory, world, budget):
    result = check(session_factory, budget.id, [item(world, "48180000", 5_000)])
    assert result.verdict == "allowed"
    assert result.allowed
    (d,) = result.items
    assert d.verdict == "allowed"
    assert codes(d) == ["within-plan"]
    assert d.plan_line.description == DIGITAL_LINE["description"]
    assert "£150.00 left" in d.reasons[0].message
    assert (result.budget_pence, result.top_up_pence, result.total_pence) == (5_000, 0, 5_000)


def test_a_plan_category_covers_its_descendants(session_factory, world, budget):
    # The wheelchair line covers 33193000; powered wheelchairs are two levels below it.
    result = check(session_factory, budget.id, [item(world, "33193121", 90_000)])
    assert result.verdict == "allowed"
    assert result.items[0].plan_line.description == WHEELCHAIR_LINE["description"]


@pytest.mark.parametrize(
    "code", ["15910000", "MKT-TOBACCO", "92351000", "MKT-DEBT", "85121100", "MKT-EMERGENCY"]
)
def test_excluded_categories_are_always_refused(session_factory, world, budget, code):
    result = check(session_factory, budget.id, [item(world, code, 100)])
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["category-excluded"]
    assert "can never be bought" in result.items[0].reasons[0].message


def test_a_care_plan_cannot_cover_an_excluded_category(session_factory, world, budget):
    with session_factory.begin() as session, pytest.raises(ValidationFailed) as error:
        service.add_plan_line(
            session,
            world.manager.principal,
            session.get(Budget, budget.id),
            description="Anything",
            category_codes=["MKT-EXCLUDED"],
        )
    assert error.value.code == "category-excluded"


def test_an_item_outside_the_plan_needs_approval(session_factory, world, budget):
    result = check(session_factory, budget.id, [item(world, "MKT-VOICE", 8_000)])
    assert result.verdict == "needs_approval"
    assert codes(result.items[0]) == ["outside-care-plan"]
    assert "approve" in result.items[0].reasons[0].message


def test_an_item_above_the_threshold_needs_approval(session_factory, world):
    budget = world.budget(plan_lines=[WHEELCHAIR_LINE], threshold=50_000)
    result = check(session_factory, budget.id, [item(world, "33193120", 60_000)])
    assert result.verdict == "needs_approval"
    assert codes(result.items[0]) == ["above-approval-threshold"]
    at_threshold = check(session_factory, budget.id, [item(world, "33193120", 50_000)])
    assert at_threshold.verdict == "allowed"


def test_a_basket_above_the_threshold_needs_approval(session_factory, world):
    budget = world.budget(plan_lines=[WHEELCHAIR_LINE], threshold=50_000)
    items = [item(world, "33193120", 30_000), item(world, "33141720", 30_000)]
    result = check(session_factory, budget.id, items)
    assert [d.verdict for d in result.items] == ["allowed", "allowed"]
    assert result.verdict == "needs_approval"
    assert [r.code for r in result.reasons] == ["basket-above-approval-threshold"]


def test_more_than_the_plan_line_has_left_is_refused(session_factory, world, budget):
    result = check(session_factory, budget.id, [item(world, "48180000", 20_001)])
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["exceeds-plan-line"]
    assert result.items[0].budget_pence == 0


def test_with_top_up_the_holder_pays_the_difference(session_factory, world):
    budget = world.budget(plan_lines=[WHEELCHAIR_LINE], top_up=True, threshold=500_000)
    result = check(session_factory, budget.id, [item(world, "33193121", 190_000)])
    assert result.verdict == "allowed"
    (d,) = result.items
    assert codes(d) == ["top-up-required"]
    assert (d.budget_pence, d.top_up_pence) == (150_000, 40_000)
    assert (result.budget_pence, result.top_up_pence) == (150_000, 40_000)
    assert "£400.00 yourself by card" in d.reasons[0].message


def test_items_are_checked_against_running_totals(session_factory, world, budget):
    items = [item(world, "48180000", 15_000), item(world, "48180000", 6_000)]
    result = check(session_factory, budget.id, items)
    assert [d.verdict for d in result.items] == ["allowed", "refused"]
    assert codes(result.items[1]) == ["exceeds-plan-line"]


def test_more_than_the_budget_has_available_is_refused(session_factory, world, budget):
    mgr = world.manager.principal
    with session_factory.begin() as session:
        b = session.get(Budget, budget.id)
        ledger.hold(session, mgr, b, 160_000)  # e.g. an approved out-of-plan purchase
    # 10,000 left in the budget; the digital line still has 20,000.
    result = check(session_factory, budget.id, [item(world, "48180000", 12_000)])
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["exceeds-budget-available"]
    # Outside the plan and beyond available: needs approval and refused -> refused.
    result = check(session_factory, budget.id, [item(world, "MKT-VOICE", 12_000)])
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["outside-care-plan", "exceeds-budget-available"]


@pytest.mark.parametrize("action", ["suspend", "close"])
def test_a_budget_that_is_not_active_refuses_everything(session_factory, world, budget, action):
    with session_factory.begin() as session:
        service.change_status(
            session, world.manager.principal, session.get(Budget, budget.id), action, "Review"
        )
    result = check(session_factory, budget.id, [item(world, "48180000", 100)])
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["budget-not-active"]
    assert action[:4] in result.items[0].reasons[0].message


@pytest.mark.parametrize("days", [-1, 1])
def test_outside_the_period_everything_is_refused(session_factory, world, days):
    today = utcnow().date()
    budget = world.budget(
        plan_lines=[DIGITAL_LINE], start=today - timedelta(days=30), end=today + timedelta(days=30)
    )
    day = today + timedelta(days=31 if days > 0 else -31)
    result = check(session_factory, budget.id, [item(world, "48180000", 100)], today=day)
    assert result.verdict == "refused"
    assert codes(result.items[0]) == ["outside-budget-period"]


def test_items_can_name_a_product_or_an_offer(session_factory, world, budget):
    offer = world.offer("48180000", 1_000)
    result = check(
        session_factory,
        budget.id,
        [
            {"amount_pence": 1_000, "offer_id": offer.id},
            {"amount_pence": 1_000, "product_id": offer.product_id},
        ],
    )
    assert [d.category.code for d in result.items] == ["48180000", "48180000"]
    assert result.verdict == "allowed"


def test_a_named_plan_line_that_does_not_cover_the_item_is_outside_the_plan(
    session_factory, world, budget
):
    wheelchair_line = budget.plan_lines[0].id
    result = check(
        session_factory, budget.id, [item(world, "48180000", 100, plan_line_id=wheelchair_line)]
    )
    assert codes(result.items[0]) == ["outside-care-plan"]


@pytest.mark.parametrize(
    "bad",
    [
        [],
        [{"amount_pence": 0, "category_id": "x"}],
        [{"amount_pence": 2.5, "category_id": "x"}],
        [{"amount_pence": 100}],
        [{"amount_pence": 100, "colour": "red"}],
    ],
)
def test_bad_items_are_validation_errors(session_factory, world, budget, bad):
    with pytest.raises(ValidationFailed):
        check(session_factory, budget.id, bad)


def test_an_unknown_offer_is_not_found(session_factory, world, budget):
    with pytest.raises(NotFound):
        check(session_factory, budget.id, [{"amount_pence": 100, "offer_id": "off_nope"}])


def test_all_reasons_flatten_item_and_basket_reasons(session_factory, world, budget):
    result = check(
        session_factory,
        budget.id,
        [item(world, "MKT-VOICE", 60_000), item(world, "48180000", 50_000)],
    )
    flat = result.all_reasons()
    assert {r["code"] for r in flat} == {
        "outside-care-plan",
        "exceeds-plan-line",
        "basket-above-approval-threshold",
    }
    assert {r["item"] for r in flat} == {None, 0, 1}
