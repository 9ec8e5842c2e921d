"""``marketplace demo``: realistic demo data, loaded idempotently.

Each domain contributes a seeder (``demo/<domain>.py``) that looks objects up by their natural
key (ODS code, email, GTIN...) before creating them, so running the demo twice creates nothing
twice. Seeders run in order and share a ``DemoContext``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click
from sqlalchemy.orm import Session, sessionmaker

from ..accounts.service import Principal
from ..catalog.search.outbox import documents_deferred
from ..db import unit_of_work

DEMO_ACTOR = Principal.system("demo")
Progress = Callable[[str], None]


@dataclass
class DemoContext:
    progress: Progress
    objects: dict[str, Any] = field(default_factory=dict)
    tokens: dict[str, tuple[str, str]] = field(default_factory=dict)  # role -> (email, token)
    # (description, curl): "{base}" becomes the base URL, "{token:ROLE}" that role's token.
    examples: list[tuple[str, str]] = field(default_factory=list)


def seeders() -> list[Callable[[Session, DemoContext], None]]:
    from . import accounts, budgets, catalog, orders, pricing

    # pricing.seed reads the catalogue's commodity products: keep it after the catalogue seeders.
    return [
        accounts.seed,
        catalog.seed_categories,
        catalog.seed_catalogue,
        pricing.seed,
        budgets.seed,
        orders.seed,
        accounts.issue_tokens,
    ]


def load_demo(
    session_factory: sessionmaker[Session], progress: Progress = lambda _m: None
) -> DemoContext:
    context = DemoContext(progress=progress)
    for seed in seeders():
        with unit_of_work(session_factory) as session, documents_deferred(session):
            seed(session, context)
    return context


def print_welcome(context: DemoContext, base_url: str) -> None:
    echo = click.echo
    echo("")
    echo("NHS open procurement marketplace: demo data loaded.")
    echo(
        f"API:  {base_url}/api/v1   Docs: {base_url}/docs   OpenAPI: {base_url}/api/v1/openapi.json"
    )
    echo("")
    echo("Tokens (one per role; valid 30 days; shown once):")
    for role, (email, token) in context.tokens.items():
        echo(f"  {role:<15} {email:<40} {token}")
    echo("")
    echo("Try:")
    buyer = context.tokens.get("buyer", ("", "TOKEN"))[1]
    echo(f'  curl -s -H "Authorization: Bearer {buyer}" {base_url}/api/v1/me')
    for description, command in context.examples:
        command = command.replace("{base}", base_url)
        for role, (_email, token) in context.tokens.items():
            command = command.replace(f"{{token:{role}}}", token)
        echo(f"  # {description}")
        echo(f"  {command}")
    echo("")
