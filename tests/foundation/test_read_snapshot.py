"""A request that only reads sees one snapshot from its first statement to its last, so that
what it reads in two statements (a ranking's rows and its totals) cannot mix two states."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text

from marketplace.accounts.models import Organisation, OrgType
from marketplace.web import get_session


def _count(session) -> int:
    return session.scalar(select(func.count()).select_from(Organisation))


def test_a_read_request_does_not_see_a_commit_made_during_it(app, factory):
    factory.org(OrgType.TRUST)
    with app.test_request_context("/api/v1/price-variance", method="GET"):
        session = get_session()
        before = _count(session)
        factory.org(OrgType.TRUST)  # committed by another session meanwhile
        assert _count(session) == before
        session.close()
    with app.test_request_context("/api/v1/price-variance", method="GET"):
        session = get_session()
        assert _count(session) == before + 1  # the next request sees it
        session.close()


def test_reads_are_repeatable_read_and_writes_read_committed_on_postgresql(app, is_postgres):
    if not is_postgres:
        pytest.skip("isolation levels are PostgreSQL's: set MARKETPLACE_TEST_DATABASE_URL")
    level = text("SHOW transaction_isolation")
    with app.test_request_context("/api/v1/search", method="GET"):
        session = get_session()
        assert session.scalar(level) == "repeatable read"
        session.close()
    with app.test_request_context("/api/v1/orders", method="POST"):
        session = get_session()
        assert session.scalar(level) == "read committed"
        session.rollback()
        session.close()
