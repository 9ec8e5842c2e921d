"""Fixtures for the budgets tests: the bundled category tree, a commissioner with a budget
manager and budget holders, budgets built through the service, and catalogue products."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from marketplace.accounts.models import OrgType, Role
from marketplace.budgets import service
from marketplace.budgets.models import Budget, ManagementType
from marketplace.catalog import service as catalog
from marketplace.catalog.models import Category, Offer, Product
from marketplace.db import utcnow
from tests.support import Actor, Factory


class World:
    """One commissioner, its manager and two holders; helpers to build budgets and products."""

    def __init__(self, factory: Factory, session_factory):
        self.factory = factory
        self.session_factory = session_factory
        with session_factory.begin() as session:
            catalog.load_categories(session, catalog.bundled_category_rows())
            self.categories = {c.code: c.id for c in session.query(Category)}
        self.commissioner = factory.org(OrgType.COMMISSIONER)
        self.manager = factory.actor(Role.BUDGET_MANAGER, self.commissioner)
        self.holder = factory.actor(Role.BUDGET_HOLDER, self.commissioner)
        self.other_holder = factory.actor(Role.BUDGET_HOLDER, self.commissioner)
        self._supplier = None
        self._n = 0

    def budget(
        self,
        *,
        holder: Actor | None = None,
        management_type: ManagementType = ManagementType.NOTIONAL,
        allocation_pence: int = 0,
        plan_lines: list[dict[str, Any]] | None = None,
        threshold: int = 100_000,
        top_up: bool = False,
        start: date | None = None,
        end: date | None = None,
        **kwargs: Any,
    ) -> Budget:
        today = utcnow().date()
        with self.session_factory.begin() as session:
            budget = service.create_budget(
                session,
                self.manager.principal,
                holder_id=(holder or self.holder).user.id,
                management_type=management_type,
                period_start=start or today - timedelta(days=30),
                period_end=end or today + timedelta(days=335),
                approval_threshold_pence=threshold,
                top_up_allowed=top_up,
                allocation_pence=allocation_pence,
                plan_lines=plan_lines or [],
                **kwargs,
            )
            budget.plan_lines  # noqa: B018 - load them before the session closes
        return budget

    def line_id(self, budget: Budget, index: int = 0) -> str:
        return budget.plan_lines[index].id

    def offer(
        self,
        category_code: str,
        pack_price_pence: int,
        *,
        vat: str = "0",
        name: str | None = None,
        price_breaks: list[dict[str, int]] | None = None,
    ) -> Offer:
        if self._supplier is None:
            self._supplier = self.factory.org(OrgType.SUPPLIER)
        self._n += 1
        with self.session_factory.begin() as session:
            product = Product(
                name=name or f"Product {self._n}",
                category_id=self.categories[category_code],
                units_per_pack=1,
                attributes={},
                assurance={},
            )
            session.add(product)
            session.flush()
            offer = Offer(
                product_id=product.id,
                supplier_id=self._supplier.id,
                pack_price_pence=pack_price_pence,
                vat_rate_percent=Decimal(vat),
                stock=100,
                price_breaks=price_breaks or [],
            )
            session.add(offer)
        return offer


@pytest.fixture
def world(factory, session_factory) -> World:
    return World(factory, session_factory)


WHEELCHAIR_LINE = {
    "description": "Get around home and town independently in a wheelchair",
    "category_codes": ["33193000"],
    "amount_pence": 150_000,
}
DIGITAL_LINE = {
    "description": "Manage my condition with health apps",
    "category_codes": ["48180000"],
    "amount_pence": 20_000,
}
