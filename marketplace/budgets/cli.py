"""``marketplace budgets``: operator commands for personal health budgets."""

from __future__ import annotations

import click
from sqlalchemy import select

from .models import Budget


@click.group("budgets")
def budgets_group() -> None:
    """Personal health budgets."""


@budgets_group.command("verify")
@click.argument("budget_ids", nargs=-1)
def verify(budget_ids: tuple[str, ...]) -> None:
    """Recompute every budget's balances from its ledger (or only BUDGET_IDS) and compare them
    with the cached balances. Prints one line per budget; exits 1 if any disagrees."""
    from ..cli import fail, handle_errors, session_scope
    from .ledger import verify_ledger

    @handle_errors
    def run() -> None:
        failed = 0
        with session_scope(write=False) as session:
            ids = list(budget_ids) or list(session.scalars(select(Budget.id).order_by(Budget.id)))
            for budget_id in ids:
                result = verify_ledger(session, budget_id)
                status = "ok" if result.ok else "MISMATCH"
                click.echo(f"{budget_id}\t{status}\t{result.entries} entries")
                for problem in result.problems:
                    click.echo(f"  {problem}")
                failed += not result.ok
        if failed:
            fail(f"{failed} of {len(ids)} budgets disagree with their ledger")
        click.echo(f"all {len(ids)} budgets agree with their ledgers")

    run()
