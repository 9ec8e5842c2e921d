"""`marketplace demo --no-serve`, loaded twice into one database for the whole module (a full
load is the most expensive thing the suite does): nothing is duplicated, the printed tokens
work, and each domain's demo data is realistic."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

import marketplace.demo
from marketplace import cli
from marketplace.accounts.models import ApiToken, Organisation, Role, User
from marketplace.audit import AuditEvent
from marketplace.budgets import ledger
from marketplace.budgets.models import Approval, Budget, BudgetStatus, LedgerEntry
from marketplace.catalog.models import Category, Offer, Product
from marketplace.config import Settings
from marketplace.demo import DemoContext
from marketplace.models import metadata
from tests.conftest import _empty_all_tables

TOKEN_LINE = re.compile(r"^\s+(\w+)\s+(\S+@\S+)\s+(mkt_\S+)$", re.MULTILINE)


def _row_counts(session_factory: sessionmaker[Session]) -> dict[str, int]:
    skip = {"api_tokens", "audit_events"}  # tokens are re-issued each run; the audit log grows
    with session_factory() as session:
        return {
            table.name: session.scalar(select(func.count()).select_from(table))
            for table in metadata.sorted_tables
            if table.name not in skip
        }


@dataclass
class DemoRuns:
    first: Result
    second: Result
    counts_after_first: dict[str, int]
    counts_after_second: dict[str, int]
    contexts: list[DemoContext]


@pytest.fixture(scope="module")
def demo(shared_app: Flask, migrated: Settings) -> Iterator[DemoRuns]:
    """The CLI's demo run twice over an empty database, with what each run printed and loaded."""
    session_factory = shared_app.extensions["marketplace"].session_factory
    _empty_all_tables(shared_app.extensions["marketplace"].engine)
    contexts: list[DemoContext] = []
    real_load_demo = marketplace.demo.load_demo

    def recording_load_demo(*args, **kwargs) -> DemoContext:
        contexts.append(real_load_demo(*args, **kwargs))
        return contexts[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", migrated.database_url)
        patch.setenv("LOG_LEVEL", "WARNING")
        patch.setattr(cli, "_state", None)
        patch.setattr(marketplace.demo, "load_demo", recording_load_demo)
        runner = CliRunner()
        first = runner.invoke(cli.main, ["demo", "--no-serve"], catch_exceptions=False)
        assert first.exit_code == 0, first.output
        counts_after_first = _row_counts(session_factory)
        second = runner.invoke(cli.main, ["demo", "--no-serve"], catch_exceptions=False)
        assert second.exit_code == 0, second.output
        counts_after_second = _row_counts(session_factory)
        cli._state.engine.dispose()
    yield DemoRuns(first, second, counts_after_first, counts_after_second, contexts)
    _empty_all_tables(shared_app.extensions["marketplace"].engine)


@pytest.fixture
def demo_client(shared_app: Flask, demo: DemoRuns) -> FlaskClient:
    """A client over the demo data (the usual ``client`` fixture starts from an empty database)."""
    return shared_app.test_client()


@pytest.fixture
def demo_db(shared_app: Flask, demo: DemoRuns) -> Iterator[Session]:
    session = shared_app.extensions["marketplace"].session_factory()
    yield session
    session.rollback()
    session.close()


# --- the whole demo ------------------------------------------------------------------------------


def test_the_demo_loads_twice_without_duplicates(demo: DemoRuns):
    assert demo.counts_after_second == demo.counts_after_first
    assert len(demo.contexts) == 2


def test_the_demo_has_real_trusts_and_a_user_for_every_role(demo_db):
    trusts = demo_db.scalar(select(func.count(Organisation.id)).where(Organisation.type == "trust"))
    assert trusts >= 20
    assert set(demo_db.scalars(select(User.role))) == set(Role)


def test_the_printed_tokens_work_and_the_previous_run_is_revoked(demo, demo_client, demo_db):
    tokens = {role: token for role, _email, token in TOKEN_LINE.findall(demo.second.stdout)}
    assert set(tokens) == {"operator", "buyer", "supplier", "budget_manager", "budget_holder"}
    for role, token in tokens.items():
        me = demo_client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, role
        assert me.get_json()["user"]["role"] == role
    old = {role: token for role, _email, token in TOKEN_LINE.findall(demo.first.stdout)}
    stale = demo_client.get("/api/v1/me", headers={"Authorization": f"Bearer {old['buyer']}"})
    assert stale.status_code == 401
    live = demo_db.scalar(select(func.count(ApiToken.id)).where(ApiToken.revoked_at.is_(None)))
    assert live == len(tokens)
    assert "curl" in demo.second.stdout


# --- catalogue -----------------------------------------------------------------------------------


def test_the_demo_catalogue_is_realistic(demo, demo_db):
    counts = demo.counts_after_second
    assert 300 <= counts["products"] <= 600
    assert counts["offers"] > counts["products"] * 2
    assert counts["offer_price_history"] > counts["offers"]  # some offers have earlier prices
    assert "products" in demo.first.stderr  # progress is shown while loading
    by_category = Counter(
        demo_db.scalars(select(Category.code).join(Product, Product.category_id == Category.id))
    )
    for code in (
        "MKT-HOSIERY-AE",
        "MKT-HOSIERY-COMP",
        "MKT-LYMPH",
        "18424300",
        "33141110",
        "33141113",
        "33141200",
        "33141310",
        "33141320",
        "33141123",
        "33193120",
        "33193121",
        "33141720",
        "33141710",
        "33123100",
        "33195100",
        "MKT-VOICE",
        "MKT-TELECARE",
        "48180000",
    ):
        assert by_category[code] > 0, code
    competing = demo_db.execute(
        select(
            Offer.product_id,
            func.count(),
            func.min(Offer.pack_price_pence),
            func.max(Offer.pack_price_pence),
        )
        .group_by(Offer.product_id)
        .having(func.count() >= 3)
    ).all()
    assert len(competing) >= 50
    assert any(high > low * 1.2 for _, _, low, high in competing)  # real price spreads
    excluded = demo_db.scalars(select(Product).where(Product.benchmark_excluded)).all()
    assert excluded
    assert all(p.benchmark_excluded_reason for p in excluded)


def test_the_demo_catalogue_answers_through_the_api(demo_client):
    stockings = demo_client.get("/api/v1/products?category=MKT-HOSIERY-AE&limit=100").get_json()
    assert stockings["items"]
    assert all(p["offer_count"] >= 1 for p in stockings["items"])
    detail = demo_client.get(f"/api/v1/products/{stockings['items'][0]['id']}").get_json()
    prices = [o["unit_price_pence"] for o in detail["offers"]]
    assert prices == sorted(prices)
    app = demo_client.get("/api/v1/products?category=48180000").get_json()["items"][0]
    assert app["assurance"]["dtac_passed"] in (True, False)


# --- personal health budgets ---------------------------------------------------------------------


def test_the_demo_budgets_are_realistic(demo, demo_db):
    counts = demo.counts_after_second
    assert counts["budgets"] == 3
    assert counts["budget_plan_lines"] == 5
    assert counts["budget_approvals"] == 1
    first, second = demo.contexts
    assert first.objects["budgets"] == second.objects["budgets"]
    budgets = {b.reference: b for b in demo_db.scalars(select(Budget))}
    wheelchair = budgets["PWB-001"]
    assert wheelchair.top_up_allowed
    assert wheelchair.management_type.value == "notional"
    assert (wheelchair.captured_pence, wheelchair.refunded_pence) == (18_900, 2_400)
    digital = budgets["PHB-014"]
    assert digital.management_type.value == "direct_payment"
    assert digital.representative_user_id is not None
    assert budgets["PHB-022"].status == BudgetStatus.SUSPENDED
    approval = demo_db.scalar(select(Approval))
    assert approval.status.value == "pending"
    assert approval.budget_id == digital.id
    for budget in budgets.values():
        assert ledger.verify_ledger(demo_db, budget.id).ok
    types = {t.value for t in demo_db.scalars(select(LedgerEntry.entry_type))}
    assert types == {"allocation", "hold", "capture", "refund"}
    suspensions = demo_db.scalar(
        select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "budget.suspend")
    )
    assert suspensions == 1


def test_the_demo_prints_budget_holder_examples(demo, demo_client):
    context = demo.contexts[-1]
    commands = [command for _description, command in context.examples]
    wheelchair = context.objects["budgets"]["PWB-001"]
    assert any(f"/api/v1/budgets/{wheelchair}/statement" in c for c in commands)
    budget_commands = [c for c in commands if "/budgets" in c or "/approvals" in c]
    assert budget_commands
    assert all("{token:" in c for c in budget_commands)  # budgets are never public
    token = context.tokens["budget_holder"][1]
    response = demo_client.get(
        f"/api/v1/budgets/{wheelchair}", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    assert response.get_json()["reference"] == "PWB-001"
