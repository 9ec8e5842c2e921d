"""``marketplace budgets verify``: an operator's check that every ledger balances."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import update

from marketplace import cli
from marketplace.budgets.models import Budget


def test_verify_reports_each_budget_and_fails_on_a_mismatch(
    app, world, session_factory, monkeypatch
):
    monkeypatch.setattr(cli, "_state", app.extensions["marketplace"])
    good = world.budget(allocation_pence=1_000)
    bad = world.budget(allocation_pence=2_000)
    runner = CliRunner()
    result = runner.invoke(cli.main, ["budgets", "verify"])
    assert result.exit_code == 0, result.output
    assert f"{good.id}\tok\t1 entries" in result.output
    assert "all 2 budgets agree" in result.output

    with session_factory.begin() as session:
        session.execute(update(Budget).where(Budget.id == bad.id).values(allocated_pence=5_000))
    result = runner.invoke(cli.main, ["budgets", "verify", bad.id])
    assert result.exit_code == 1
    assert f"{bad.id}\tMISMATCH" in result.output
    assert "1 of 1 budgets disagree" in result.output
