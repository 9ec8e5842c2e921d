"""Who sees and changes which budget: the holder, their representative, another holder, a
manager of another commissioner, buyers, suppliers, operators."""

from __future__ import annotations

import pytest

from marketplace.accounts.models import OrgType, Role
from marketplace.budgets.models import ManagementType
from tests.support import assert_problem

READS = ("", "/ledger", "/statement")


@pytest.fixture
def setup(world, factory):
    budget = world.budget(
        allocation_pence=10_000,
        management_type=ManagementType.DIRECT_PAYMENT,
        representative_id=world.other_holder.user.id,
    )
    third_holder = factory.actor(Role.BUDGET_HOLDER, world.commissioner)
    return {
        "budget": budget,
        "stranger_holder": third_holder,
        "other_manager": factory.actor(Role.BUDGET_MANAGER),
        "buyer": factory.actor(Role.BUYER),
        "supplier": factory.actor(Role.SUPPLIER),
        "operator": factory.actor(Role.OPERATOR),
    }


def test_the_holder_and_representative_see_the_budget(client, world, setup):
    budget = setup["budget"]
    for actor in (world.holder, world.other_holder, world.manager):
        for suffix in READS:
            response = client.get(f"/api/v1/budgets/{budget.id}{suffix}", headers=actor.headers)
            assert response.status_code == 200, (actor.user.email, suffix, response.get_json())
        listed = client.get("/api/v1/budgets", headers=actor.headers).get_json()["items"]
        assert budget.id in [b["id"] for b in listed]


@pytest.mark.parametrize("who", ["stranger_holder", "other_manager"])
def test_other_holders_and_other_commissioners_get_404(client, setup, who):
    budget, actor = setup["budget"], setup[who]
    for suffix in READS:
        response = client.get(f"/api/v1/budgets/{budget.id}{suffix}", headers=actor.headers)
        assert_problem(response, 404, code="budget-not-found")
    for suffix, body in [
        ("/holds", {"amount_pence": 100}),
        ("/check", {"items": [{"offer_id": "off_x", "quantity": 1}]}),
        ("/allocations", {"amount_pence": 100}),
        ("/adjustments", {"amount_pence": 100, "reason": "x"}),
        ("/plan-lines", {"description": "x", "category_codes": ["48180000"]}),
        ("/suspend", {"reason": "x"}),
    ]:
        response = client.post(
            f"/api/v1/budgets/{budget.id}{suffix}", json=body, headers=actor.headers
        )
        assert response.status_code in (403, 404), (suffix, response.status_code)
        if actor.user.role == Role.BUDGET_MANAGER or suffix in ("/holds", "/check"):
            assert_problem(response, 404)
    assert client.get("/api/v1/budgets", headers=actor.headers).get_json()["items"] == []


@pytest.mark.parametrize("who", ["buyer", "supplier", "operator"])
def test_other_roles_get_403_on_every_budget_endpoint(client, setup, who):
    budget, actor = setup["budget"], setup[who]
    for path in ("/api/v1/budgets", "/api/v1/budgets/spend-report", "/api/v1/approvals"):
        assert_problem(client.get(path, headers=actor.headers), 403, code="wrong-role")
    for suffix in READS:
        assert_problem(
            client.get(f"/api/v1/budgets/{budget.id}{suffix}", headers=actor.headers), 403
        )
    for suffix in ("/holds", "/allocations", "/adjustments", "/check", "/suspend"):
        response = client.post(
            f"/api/v1/budgets/{budget.id}{suffix}", json={}, headers=actor.headers
        )
        assert_problem(response, 403)


def test_no_token_is_401(client, setup):
    assert_problem(client.get(f"/api/v1/budgets/{setup['budget'].id}"), 401)


def test_holders_cannot_manage_their_own_budget(client, world, setup):
    budget = setup["budget"]
    for suffix, body in [
        ("/allocations", {"amount_pence": 100}),
        ("/adjustments", {"amount_pence": 100, "reason": "x"}),
        ("/suspend", {"reason": "x"}),
        ("/plan-lines", {"description": "x", "category_codes": ["48180000"]}),
    ]:
        response = client.post(
            f"/api/v1/budgets/{budget.id}{suffix}", json=body, headers=world.holder.headers
        )
        assert_problem(response, 403, code="wrong-role")
    assert_problem(client.post("/api/v1/budgets", json={}, headers=world.holder.headers), 403)
    assert_problem(client.get("/api/v1/budgets/spend-report", headers=world.holder.headers), 403)


def test_who_may_spend_follows_the_management_type(client, world, factory):
    h = {"amount_pence": 100}
    direct = world.budget(allocation_pence=1_000, management_type=ManagementType.DIRECT_PAYMENT)
    notional = world.budget(allocation_pence=1_000)
    # Direct payment: the holder spends; the manager sees it but may not spend it.
    assert (
        client.post(
            f"/api/v1/budgets/{direct.id}/holds", json=h, headers=world.holder.headers
        ).status_code
        == 201
    )
    assert_problem(
        client.post(f"/api/v1/budgets/{direct.id}/holds", json=h, headers=world.manager.headers),
        403,
        code="not-allowed-to-spend",
    )
    # Notional: the manager spends on the holder's behalf; the holder may not.
    assert (
        client.post(
            f"/api/v1/budgets/{notional.id}/holds", json=h, headers=world.manager.headers
        ).status_code
        == 201
    )
    assert_problem(
        client.post(f"/api/v1/budgets/{notional.id}/holds", json=h, headers=world.holder.headers),
        403,
        code="not-allowed-to-spend",
    )
    # Third party: the managing organisation's users spend and see it; the commissioner sees it.
    provider = factory.org(OrgType.COMMISSIONER, name="Independent User Trust")
    provider_user = factory.actor(Role.BUDGET_MANAGER, provider)
    third = world.budget(
        allocation_pence=1_000,
        management_type=ManagementType.THIRD_PARTY,
        managing_organisation_id=provider.id,
    )
    assert (
        client.post(
            f"/api/v1/budgets/{third.id}/holds", json=h, headers=provider_user.headers
        ).status_code
        == 201
    )
    assert_problem(
        client.post(f"/api/v1/budgets/{third.id}/holds", json=h, headers=world.manager.headers), 403
    )
    # ... but only the commissioner's managers change it.
    assert_problem(
        client.post(
            f"/api/v1/budgets/{third.id}/suspend",
            json={"reason": "x"},
            headers=provider_user.headers,
        ),
        403,
        code="not-budget-manager",
    )


def test_a_representative_may_spend_a_direct_payment(client, world, setup):
    response = client.post(
        f"/api/v1/budgets/{setup['budget'].id}/holds",
        json={"amount_pence": 500},
        headers=world.other_holder.headers,
    )
    assert response.status_code == 201
    assert response.get_json()["actor"] == world.other_holder.user.email
