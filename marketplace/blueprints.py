"""Every domain's API blueprint, in the order they appear in the OpenAPI document."""

from __future__ import annotations


def all_blueprints() -> list:
    from .accounts.api import blp as accounts
    from .audit_events.api import blp as audit
    from .budgets.api import blp as budgets
    from .catalog.api import blp as catalog
    from .catalog.search.api import blp as search
    from .orders.api import blp as orders
    from .pricing.api import blp as pricing
    from .transparency.api import blp as transparency

    return [accounts, catalog, search, pricing, budgets, orders, transparency, audit]
