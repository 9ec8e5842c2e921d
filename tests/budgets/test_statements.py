"""Statements: opening balance + every entry = closing balance, for any date range, in JSON and
CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime

import pytest

from marketplace.budgets import ledger
from marketplace.budgets.models import Budget
from tests.support import assert_problem

DAYS = {
    "alloc": datetime(2026, 4, 1, 9, 0, tzinfo=UTC),
    "hold": datetime(2026, 5, 10, 14, 30, tzinfo=UTC),
    "capture": datetime(2026, 5, 20, 8, 0, tzinfo=UTC),
    "refund": datetime(2026, 6, 2, 16, 45, tzinfo=UTC),
    "clawback": datetime(2026, 7, 1, 10, 0, tzinfo=UTC),
}


@pytest.fixture
def history(world, session_factory, monkeypatch):
    """A budget with entries on known days (the clock is moved for each)."""
    budget = world.budget(start=date(2026, 4, 1), end=date(2027, 3, 31))
    mgr = world.manager.principal

    def at(moment, fn):
        monkeypatch.setattr(ledger, "utcnow", lambda: moment)
        with session_factory.begin() as session:
            return fn(session, session.get(Budget, budget.id))

    at(DAYS["alloc"], lambda s, b: ledger.allocate(s, mgr, b, 200_000, reason="Annual allocation"))
    held = at(DAYS["hold"], lambda s, b: ledger.hold(s, mgr, b, 80_000, order_ref="ORD-7"))
    captured = at(DAYS["capture"], lambda s, b: ledger.capture(s, mgr, b, held.id, 75_000).capture)
    at(
        DAYS["refund"],
        lambda s, b: ledger.refund(s, mgr, b, captured.id, 10_000, reason="=SUM(A1)"),
    )
    at(DAYS["clawback"], lambda s, b: ledger.adjust(s, mgr, b, -20_000, reason="Clawback"))
    monkeypatch.undo()
    return budget


def statement(client, actor, budget_id, **query):
    return client.get(
        f"/api/v1/budgets/{budget_id}/statement", query_string=query, headers=actor.headers
    )


def test_a_statement_for_the_whole_period(client, world, history):
    body = statement(
        client, world.holder, history.id, **{"from": "2026-04-01", "to": "2026-12-31"}
    ).get_json()
    assert body["opening_balance_pence"] == 0
    types = [e["entry_type"] for e in body["entries"]]
    assert types == ["allocation", "hold", "capture", "release", "refund", "adjustment"]
    assert [e["balance_pence"] for e in body["entries"]] == [
        200_000,
        120_000,
        120_000,
        125_000,
        135_000,
        115_000,
    ]
    assert body["closing_balance_pence"] == 115_000
    assert (
        body["opening_balance_pence"] + sum(e["effect_pence"] for e in body["entries"])
        == (body["closing_balance_pence"])
    )
    assert body["totals"]["capture"] == 75_000
    assert body["holder"]["id"] == world.holder.user.id


@pytest.mark.parametrize(
    ("start", "end", "opening", "types", "closing"),
    [
        ("2026-05-01", "2026-05-31", 200_000, ["hold", "capture", "release"], 125_000),
        ("2026-05-21", "2026-06-30", 125_000, ["refund"], 135_000),
        ("2026-07-02", "2026-08-01", 115_000, [], 115_000),
        ("2026-05-20", "2026-05-20", 120_000, ["capture", "release"], 125_000),
    ],
)
def test_any_date_range_balances(client, world, history, start, end, opening, types, closing):
    body = statement(client, world.manager, history.id, **{"from": start, "to": end}).get_json()
    assert body["opening_balance_pence"] == opening
    assert [e["entry_type"] for e in body["entries"]] == types
    assert body["closing_balance_pence"] == closing
    assert opening + sum(e["effect_pence"] for e in body["entries"]) == closing


def test_the_statement_as_csv(client, world, history):
    for kwargs in ({"format": "csv"}, {}):
        headers = {**world.holder.headers, **({} if kwargs else {"Accept": "text/csv"})}
        response = client.get(
            f"/api/v1/budgets/{history.id}/statement",
            query_string={"from": "2026-05-01", "to": "2026-06-30", **kwargs},
            headers=headers,
        )
        assert response.status_code == 200
        assert response.mimetype == "text/csv"
        assert "attachment" in response.headers["Content-Disposition"]
        rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert rows[0]["entry_type"] == "opening_balance"
        assert rows[-1]["entry_type"] == "closing_balance"
        opening, closing = int(rows[0]["balance_pence"]), int(rows[-1]["balance_pence"])
        middle = rows[1:-1]
        assert [r["entry_type"] for r in middle] == ["hold", "capture", "release", "refund"]
        assert opening + sum(int(r["effect_pence"]) for r in middle) == closing == 135_000
        assert middle[0]["order_ref"] == "ORD-7"
        # Text a spreadsheet would run as a formula is neutralised.
        assert middle[3]["reason"] == "'=SUM(A1)"


def test_the_default_range_is_the_period_so_far(client, world, session_factory):
    budget = world.budget(allocation_pence=1_000)
    body = statement(client, world.holder, budget.id).get_json()
    assert body["from"] == budget.period_start.isoformat()
    assert [e["entry_type"] for e in body["entries"]] == ["allocation"]
    assert body["closing_balance_pence"] == 1_000


@pytest.mark.parametrize(
    "query",
    [{"from": "2026-06-01", "to": "2026-05-01"}, {"from": "yesterday"}, {"format": "pdf"}],
)
def test_bad_ranges_are_422(client, world, history, query):
    assert_problem(statement(client, world.holder, history.id, **query), 422)
