"""Idempotency-Key on money-moving POSTs: retries replay, reused keys are refused, concurrent
duplicates execute once."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from marketplace.budgets import ledger
from marketplace.budgets.models import Budget, LedgerEntry
from marketplace.idempotency import IdempotencyKey, fingerprint
from tests.budgets.live import at_once, live_server, request
from tests.support import assert_problem


def entries(session_factory, budget_id) -> int:
    with session_factory() as session:
        return session.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.budget_id == budget_id)
        )


def with_key(actor, key):
    return {**actor.headers, "Idempotency-Key": key}


def test_a_retry_returns_the_first_result_and_moves_no_money_twice(client, world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    path = f"/api/v1/budgets/{budget.id}/holds"
    headers = with_key(world.manager, "hold-order-1")
    first = client.post(path, json={"amount_pence": 4_000, "order_ref": "o-1"}, headers=headers)
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first.headers
    # Same body, keys in another order and other whitespace: the same request.
    retry = client.post(
        path,
        data='{ "order_ref": "o-1",   "amount_pence": 4000 }',
        content_type="application/json",
        headers=headers,
    )
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.get_json() == first.get_json()
    assert entries(session_factory, budget.id) == 2  # allocation + one hold
    with session_factory() as session:
        assert session.get(Budget, budget.id).available_pence == 6_000
        assert ledger.verify_ledger(session, budget.id).ok


def test_the_same_key_with_a_different_body_is_422(client, world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    path = f"/api/v1/budgets/{budget.id}/holds"
    headers = with_key(world.manager, "k-1")
    assert client.post(path, json={"amount_pence": 1_000}, headers=headers).status_code == 201
    response = client.post(path, json={"amount_pence": 2_000}, headers=headers)
    assert_problem(response, 422, code="idempotency-key-reused")
    # ... or on another endpoint.
    response = client.post(
        f"/api/v1/budgets/{budget.id}/allocations", json={"amount_pence": 1_000}, headers=headers
    )
    assert_problem(response, 422, code="idempotency-key-reused")
    assert entries(session_factory, budget.id) == 2


def test_keys_belong_to_their_caller(client, world, factory, session_factory):
    budget = world.budget(allocation_pence=10_000)
    from marketplace.accounts.models import Role

    colleague = factory.actor(Role.BUDGET_MANAGER, world.commissioner)
    path = f"/api/v1/budgets/{budget.id}/holds"
    for actor in (world.manager, colleague):
        response = client.post(path, json={"amount_pence": 1_000}, headers=with_key(actor, "same"))
        assert response.status_code == 201
        assert "Idempotent-Replayed" not in response.headers
    assert entries(session_factory, budget.id) == 3


def test_a_failed_request_stores_nothing_and_can_be_retried(client, world, session_factory):
    budget = world.budget(allocation_pence=1_000)
    path = f"/api/v1/budgets/{budget.id}/holds"
    headers = with_key(world.manager, "retry-me")
    assert_problem(
        client.post(path, json={"amount_pence": 2_000}, headers=headers),
        409,
        code="insufficient-budget",
    )
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(IdempotencyKey)) == 0
    client.post(
        f"/api/v1/budgets/{budget.id}/allocations",
        json={"amount_pence": 1_000},
        headers=world.manager.headers,
    )
    response = client.post(path, json={"amount_pence": 2_000}, headers=headers)
    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response.headers


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ünïcode"])
def test_a_malformed_key_is_422(client, world, key):
    budget = world.budget(allocation_pence=1_000)
    response = client.post(
        f"/api/v1/budgets/{budget.id}/holds",
        json={"amount_pence": 100},
        headers={**world.manager.headers, "Idempotency-Key": key.encode().decode("latin-1")},
    )
    assert_problem(response, 422, code="invalid-idempotency-key")


def test_adjustments_and_releases_are_idempotent_too(client, world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    base = f"/api/v1/budgets/{budget.id}"
    h = with_key(world.manager, "adj-1")
    body = {"amount_pence": -2_500, "reason": "Clawback"}
    first = client.post(f"{base}/adjustments", json=body, headers=h)
    second = client.post(f"{base}/adjustments", json=body, headers=h)
    assert first.status_code == second.status_code == 201
    assert first.get_json() == second.get_json()
    hold = client.post(
        f"{base}/holds", json={"amount_pence": 1_000}, headers=world.manager.headers
    ).get_json()
    h = with_key(world.manager, "rel-1")
    first = client.post(f"{base}/holds/{hold['id']}/release", json={}, headers=h)
    second = client.post(f"{base}/holds/{hold['id']}/release", json={}, headers=h)
    assert first.status_code == second.status_code == 201
    assert second.headers["Idempotent-Replayed"] == "true"
    with session_factory() as session:
        assert session.get(Budget, budget.id).available_pence == 7_500
        assert ledger.verify_ledger(session, budget.id).ok


@pytest.mark.slow
def test_concurrent_duplicates_execute_once(app, world, session_factory):
    budget = world.budget(allocation_pence=100_000)
    headers = with_key(world.manager, "double-click")
    with live_server(app) as address:
        results = at_once(
            12,
            lambda _i: request(
                address,
                "POST",
                f"/api/v1/budgets/{budget.id}/holds",
                {"amount_pence": 5_000, "order_ref": "ORD-42"},
                headers,
            ),
        )
    assert Counter(status for status, _b, _h in results) == {201: 12}
    assert len({body["id"] for _s, body, _h in results}) == 1
    replayed = [h.get("Idempotent-Replayed") for _s, _b, h in results]
    assert replayed.count("true") == 11
    assert entries(session_factory, budget.id) == 2
    with session_factory() as session:
        assert session.get(Budget, budget.id).held_pence == 5_000


def test_fingerprint_ignores_json_formatting_but_not_content():
    a = fingerprint("POST", "/p", b'{"a": 1, "b": [1, 2]}')
    assert a == fingerprint("post", "/p", b'{"b":[1,2],"a":1}')
    assert a != fingerprint("POST", "/p", b'{"a": 2, "b": [1, 2]}')
    assert a != fingerprint("POST", "/q", b'{"a": 1, "b": [1, 2]}')
    assert a != fingerprint("POST", "/p", b'{"a": 1, "b": [1, 2]}', query="x=1")
    assert fingerprint("POST", "/p", b"not json") != fingerprint("POST", "/p", b"not json!")
