"""Command groups contributed by the domain packages."""

from __future__ import annotations

import click


def domain_groups() -> list[click.Command]:
    from .budgets.cli import budgets_group
    from .catalog.cli import catalog
    from .pricing.cli import pricing

    return [catalog, pricing, budgets_group]
