"""The ledger is append-only: the ORM refuses to change or delete an entry, and so does the
database itself (triggers), whatever code or SQL tries."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError

from marketplace.budgets.models import LedgerEntry, LedgerIsAppendOnly


@pytest.fixture
def budget_id(world):
    budget = world.budget(allocation_pence=5_000)
    return budget.id


def _entry(session, budget_id) -> LedgerEntry:
    return session.scalar(select(LedgerEntry).where(LedgerEntry.budget_id == budget_id))


def test_the_orm_refuses_to_change_an_entry(session_factory, budget_id):
    with session_factory() as session:
        entry = _entry(session, budget_id)
        entry.amount_pence = 999_999
        with pytest.raises(LedgerIsAppendOnly):
            session.flush()


def test_the_orm_refuses_to_delete_an_entry(session_factory, budget_id):
    with session_factory() as session:
        session.delete(_entry(session, budget_id))
        with pytest.raises(LedgerIsAppendOnly):
            session.flush()


@pytest.mark.parametrize(
    "statement",
    [
        update(LedgerEntry).values(amount_pence=1),
        delete(LedgerEntry),
    ],
)
def test_the_orm_refuses_bulk_changes(session_factory, budget_id, statement):
    with session_factory() as session, pytest.raises(LedgerIsAppendOnly):
        session.execute(statement)


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE budget_ledger_entries SET amount_pence = amount_pence * 100",
        "UPDATE budget_ledger_entries SET reason = 'tampered'",
        "DELETE FROM budget_ledger_entries",
    ],
)
def test_the_database_refuses_update_and_delete(app, budget_id, sql):
    engine = app.extensions["marketplace"].engine
    with engine.connect() as connection:
        with pytest.raises(DBAPIError) as error:
            connection.execute(text(sql))
        assert "append-only" in str(error.value)
        connection.rollback()
        count = connection.execute(text("SELECT count(*) FROM budget_ledger_entries")).scalar()
        assert count == 1


def test_inserting_new_entries_still_works(session_factory, world, budget_id):
    from marketplace.budgets import ledger
    from marketplace.budgets.models import Budget

    with session_factory.begin() as session:
        ledger.adjust(
            session,
            world.manager.principal,
            session.get(Budget, budget_id),
            -100,
            reason="Correction",
        )
    with session_factory() as session:
        assert ledger.verify_ledger(session, budget_id).ok
