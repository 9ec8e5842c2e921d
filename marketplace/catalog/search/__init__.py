"""Product search behind one interface, with SQL (default) and Elasticsearch backends.

- ``base``: the ``SearchQuery`` → ``SearchResult`` contract (``SearchBackend``), cursors.
- ``text``: words, synonyms (``synonyms.txt``), spelling, exact GTIN / part-number hits.
- ``documents`` + ``outbox``: ``product_changed`` keeps ``search_documents`` current (and, with
  Elasticsearch, writes the transactional outbox).
- ``sql``: SQLite FTS5 / PostgreSQL full-text search over ``search_documents``, with ``cache``:
  the search generation and the request cache it validates.
- ``elasticsearch``: the same search on Elasticsearch 9, reindex with an alias swap, outbox sync.
- ``api`` (``GET /api/v1/search``), ``cli`` (``marketplace search reindex|sync``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from flask import Flask
from sqlalchemy.exc import SQLAlchemyError

from .base import SearchBackend, SearchQuery, SearchResult

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from ... import AppState
    from ...config import Settings

__all__ = [
    "SearchBackend",
    "SearchQuery",
    "SearchResult",
    "get_backend",
    "init_app",
    "make_backend",
    "warm_up",
]
EXTENSION = "marketplace.search"
log = logging.getLogger(__name__)


def make_backend(settings: Settings, **kwargs: Any) -> SearchBackend:
    """The backend ``SEARCH_BACKEND`` names (keyword arguments go to its constructor)."""
    if settings.search_backend == "elasticsearch":
        from .elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend.from_settings(settings, **kwargs)
    from .shared import SharedMatches
    from .sql import SqlSearchBackend

    if settings.redis_url and "shared" not in kwargs:
        # every worker and server of this deployment shares the queries' full-text matches
        kwargs["shared"] = SharedMatches.from_url(
            settings.redis_url, prefix=settings.rate_limit_key_prefix
        )
    return SqlSearchBackend(
        cache_size=settings.search_cache_size, cache_mb=settings.search_cache_mb, **kwargs
    )


def get_backend(app: Flask) -> SearchBackend:
    return app.extensions[EXTENSION]


def warm_up(app: Flask) -> None:
    """Prepare the backend before a worker serves its first search (the SQL backend loads the
    documents' columns). A database that is down only delays this to the first search."""
    warm = getattr(get_backend(app), "warm", None)
    if warm is None:
        return
    try:
        warm()
    except SQLAlchemyError as error:
        log.warning("search warm-up skipped: %s", error)


def sqlite_read_engine(settings: Settings) -> Engine | None:
    """A pooled engine for searching a SQLite file: connections (and their page cache and
    memory map) live across requests. Searches in temporary b-trees stay in memory."""
    if ":memory:" in settings.database_url:
        return None
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    from ...db import make_engine

    engine = make_engine(settings, poolclass=QueuePool, pool_size=4, max_overflow=4)

    @event.listens_for(engine, "connect")
    def _search_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA temp_store=MEMORY")
        cursor.execute("PRAGMA mmap_size=1073741824")
        cursor.execute("PRAGMA query_only=1")
        cursor.close()

    return engine


def snapshot_engine(engine: Engine) -> Engine:
    """PostgreSQL: the application's pool, each search in one REPEATABLE READ transaction, so
    that the search generation, the page and the facets all come from one snapshot (READ
    COMMITTED gives every statement its own). A read-only transaction never fails to
    serialise at this level."""
    return engine.execution_options(isolation_level="REPEATABLE READ")


def init_app(app: Flask, state: AppState) -> None:
    """Choose the backend. With Elasticsearch: a readiness probe, and an after-request hook
    that delivers the outbox rows a successful writing request added (nothing is registered for
    the SQL backend, so it costs nothing there)."""
    kwargs: dict[str, Any] = {}
    if state.settings.search_backend == "sql":
        kwargs["read_engine"] = (
            sqlite_read_engine(state.settings)
            if state.settings.is_sqlite
            else snapshot_engine(state.engine)
        )
    backend = make_backend(state.settings, **kwargs)
    app.extensions[EXTENSION] = backend
    if state.settings.search_backend == "elasticsearch":
        from .sync import register_after_request

        state.readiness_probes["elasticsearch"] = backend.ping  # type: ignore[attr-defined]
        register_after_request(app, state)
