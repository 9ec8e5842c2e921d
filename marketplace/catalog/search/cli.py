"""``marketplace search reindex`` and ``marketplace search sync``."""

from __future__ import annotations

import click

from ...cli import app_state, fail, handle_errors, session_scope
from . import make_backend


@click.group()
def search() -> None:
    """Search index: rebuild it, deliver pending changes."""


@search.command("reindex")
@handle_errors
def reindex() -> None:
    """Rebuild the search index without downtime.

    SQL backend: rebuild every search document in one transaction (searches see the old
    documents until it commits). Elasticsearch: rebuild the documents, build a new versioned
    index from them, swap the alias, delete the old index, and replay what changed meanwhile.
    """
    from .documents import count_products, rebuild_all

    state = app_state()
    with session_scope() as session:
        total = count_products(session)
        with click.progressbar(length=total, label="search documents", file=None) as bar:
            searchable = rebuild_all(session, progress=bar.update)
    click.echo(f"{searchable} searchable products of {total}")
    if state.settings.search_backend != "elasticsearch":
        return
    backend = make_backend(state.settings)
    with click.progressbar(
        length=searchable, label=f"index {state.settings.elasticsearch_index}"
    ) as bar:
        name, indexed = backend.reindex(state.session_factory, progress=bar.update)  # type: ignore[attr-defined]
    click.echo(f"alias {state.settings.elasticsearch_index} -> {name} ({indexed} documents)")


@search.command("sync")
@click.option("--batch-size", default=500, show_default=True, type=click.IntRange(1, 10_000))
@handle_errors
def sync(batch_size: int) -> None:
    """Deliver pending catalogue changes (the outbox) to Elasticsearch."""
    state = app_state()
    if state.settings.search_backend != "elasticsearch":
        click.echo("nothing to sync: the SQL backend is updated in the catalogue's own transaction")
        return
    backend = make_backend(state.settings)
    report = backend.sync(state.session_factory, batch_size=batch_size)  # type: ignore[attr-defined]
    click.echo(f"delivered {report.delivered}, failed {report.failed}")
    if report.error:
        fail(f"Elasticsearch: {report.error}; pending changes stay in the outbox")
