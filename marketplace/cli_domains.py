"""Command groups contributed by the domain packages."""

from __future__ import annotations

import click


def domain_groups() -> list[click.Command]:
    from .budgets.cli import budgets_group
    from .catalog.cli import catalog
    from .catalog.search.cli import search
    from .orders.cli import payments
    from .pricing.cli import pricing

    return [catalog, search, pricing, budgets_group, payments]
