"""Concurrent requests that together would overspend can never all succeed: exactly the
affordable ones do, and the ledger balances. Real threads, each with its own connection, on
whichever database the suite runs on (SQLite by default, PostgreSQL with
MARKETPLACE_TEST_DATABASE_URL)."""

from __future__ import annotations

from collections import Counter

import pytest

from marketplace.budgets import ledger
from marketplace.budgets.models import Budget
from marketplace.db import begin_write
from marketplace.errors import Conflict
from tests.budgets.live import at_once, live_server, request

N = 50


def _in_own_transaction(session_factory, fn):
    with session_factory() as session:
        begin_write(session)
        try:
            result = fn(session)
            session.commit()
            return result
        except Conflict as error:
            session.rollback()
            return error


def _verify(session_factory, budget_id):
    with session_factory() as session:
        result = ledger.verify_ledger(session, budget_id)
        budget = session.get(Budget, budget_id)
        budget.plan_lines  # noqa: B018 - loaded while the session is open
        assert result.ok, result.problems
        return budget


def test_fifty_simultaneous_holds_on_a_hundred_pounds_exactly_ten_succeed(world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    mgr = world.manager.principal

    def hold(i):
        return _in_own_transaction(
            session_factory,
            lambda s: ledger.hold(s, mgr, s.get(Budget, budget.id), 1_000, order_ref=f"o-{i}"),
        )

    results = at_once(N, hold)
    succeeded = [r for r in results if not isinstance(r, Conflict)]
    refused = [r for r in results if isinstance(r, Conflict)]
    assert len(succeeded) == 10
    assert {r.code for r in refused} == {"insufficient-budget"}
    assert all(r.extensions["shortfall_pence"] == 1_000 for r in refused)
    assert sorted(r.seq for r in succeeded) == list(range(2, 12))
    after = _verify(session_factory, budget.id)
    assert (after.available_pence, after.held_pence) == (0, 10_000)


def test_a_plan_line_limits_concurrent_holds_too(world, session_factory):
    budget = world.budget(
        allocation_pence=100_000,
        plan_lines=[
            {"description": "Apps", "category_codes": ["48180000"], "amount_pence": 10_000}
        ],
    )
    line = budget.plan_lines[0].id
    mgr = world.manager.principal

    def hold(_i):
        return _in_own_transaction(
            session_factory,
            lambda s: ledger.hold(s, mgr, s.get(Budget, budget.id), 1_000, plan_line_id=line),
        )

    results = at_once(30, hold)
    assert sum(not isinstance(r, Conflict) for r in results) == 10
    assert {r.code for r in results if isinstance(r, Conflict)} == {"plan-line-exceeded"}
    after = _verify(session_factory, budget.id)
    assert after.available_pence == 100_000
    assert after.plan_lines[0].remaining_pence == 0


def test_concurrent_releases_of_one_hold_settle_it_once(world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    mgr = world.manager.principal
    held = _in_own_transaction(
        session_factory, lambda s: ledger.hold(s, mgr, s.get(Budget, budget.id), 4_000)
    )

    def settle(i):
        name = "release" if i % 2 else "capture"
        return _in_own_transaction(
            session_factory,
            lambda s: getattr(ledger, name)(s, mgr, s.get(Budget, budget.id), held.id),
        )

    results = at_once(12, settle)
    assert sum(not isinstance(r, Conflict) for r in results) == 1
    assert {r.code for r in results if isinstance(r, Conflict)} == {"hold-already-settled"}
    after = _verify(session_factory, budget.id)
    assert after.held_pence == 0


def test_concurrent_refunds_never_exceed_the_capture(world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    mgr = world.manager.principal

    def hold_and_capture(s):
        b = s.get(Budget, budget.id)
        return ledger.capture(s, mgr, b, ledger.hold(s, mgr, b, 10_000).id).capture

    captured = _in_own_transaction(session_factory, hold_and_capture)

    def refund(_i):
        return _in_own_transaction(
            session_factory,
            lambda s: ledger.refund(s, mgr, s.get(Budget, budget.id), captured.id, 3_000),
        )

    results = at_once(10, refund)
    assert sum(not isinstance(r, Conflict) for r in results) == 3
    assert {r.code for r in results if isinstance(r, Conflict)} == {"refund-exceeds-capture"}
    after = _verify(session_factory, budget.id)
    assert (after.refunded_pence, after.available_pence) == (9_000, 9_000)


@pytest.mark.slow
def test_fifty_simultaneous_holds_over_http(app, world, session_factory):
    budget = world.budget(allocation_pence=10_000)
    headers = world.manager.headers

    with live_server(app) as address:

        def post(i):
            return request(
                address,
                "POST",
                f"/api/v1/budgets/{budget.id}/holds",
                {"amount_pence": 1_000, "order_ref": f"order-{i}"},
                headers,
            )

        results = at_once(N, post)
    statuses = Counter(status for status, _body, _h in results)
    assert statuses == {201: 10, 409: 40}, statuses
    for status, body, response_headers in results:
        if status == 409:
            assert response_headers["Content-Type"] == "application/problem+json"
            assert body["type"].endswith("/insufficient-budget")
            assert body["shortfall_pence"] == 1_000
            assert "short" in body["detail"]
    after = _verify(session_factory, budget.id)
    assert (after.available_pence, after.held_pence, after.entry_count) == (0, 10_000, 11)


@pytest.mark.slow
def test_simultaneous_holds_on_a_plan_line_over_http(app, world, session_factory):
    budget = world.budget(
        allocation_pence=50_000,
        plan_lines=[{"description": "Apps", "category_codes": ["48180000"], "amount_pence": 5_000}],
    )
    line = budget.plan_lines[0].id
    with live_server(app) as address:
        results = at_once(
            20,
            lambda i: request(
                address,
                "POST",
                f"/api/v1/budgets/{budget.id}/holds",
                {"amount_pence": 1_000, "plan_line_id": line, "category_code": "48180000"},
                world.manager.headers,
            ),
        )
    statuses = Counter(status for status, _b, _h in results)
    assert statuses == {201: 5, 409: 15}, statuses
    assert {b["type"].rsplit("/", 1)[1] for s, b, _h in results if s == 409} == {
        "plan-line-exceeded"
    }
    _verify(session_factory, budget.id)
