"""Product search behind one interface, with SQL (default) and Elasticsearch backends.

- ``base``: the ``SearchQuery`` → ``SearchResult`` contract (``SearchBackend``), cursors.
- ``text``: words, synonyms (``synonyms.txt``), spelling, exact GTIN / part-number hits.
- ``documents`` + ``outbox``: ``product_changed`` keeps ``search_documents`` current (and, with
  Elasticsearch, writes the transactional outbox).
- ``sql``: SQLite FTS5 / PostgreSQL full-text search over ``search_documents``.
- ``elasticsearch``: the same search on Elasticsearch 9, reindex with an alias swap, outbox sync.
- ``api`` (``GET /api/v1/search``), ``cli`` (``marketplace search reindex|sync``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from .base import SearchBackend, SearchQuery, SearchResult

if TYPE_CHECKING:
    from ... import AppState
    from ...config import Settings

__all__ = [
    "SearchBackend",
    "SearchQuery",
    "SearchResult",
    "get_backend",
    "init_app",
    "make_backend",
]
EXTENSION = "marketplace.search"


def make_backend(settings: Settings, **kwargs: Any) -> SearchBackend:
    """The backend ``SEARCH_BACKEND`` names (keyword arguments go to its constructor)."""
    if settings.search_backend == "elasticsearch":
        from .elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend.from_settings(settings, **kwargs)
    from .sql import SqlSearchBackend

    return SqlSearchBackend(**kwargs)


def get_backend(app: Flask) -> SearchBackend:
    return app.extensions[EXTENSION]


def init_app(app: Flask, state: AppState) -> None:
    """Choose the backend. With Elasticsearch: a readiness probe, and an after-request hook
    that delivers the outbox rows a successful writing request added (nothing is registered for
    the SQL backend, so it costs nothing there)."""
    backend = make_backend(state.settings)
    app.extensions[EXTENSION] = backend
    if state.settings.is_sqlite:
        from sqlalchemy import event

        # Searches sort and group in temporary b-trees; keep them in memory. Map the file, so a
        # new connection (one per request with a file database) reads pages without a syscall.
        @event.listens_for(state.engine, "connect")
        def _search_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.execute("PRAGMA mmap_size=1073741824")
            cursor.close()

    if state.settings.search_backend == "elasticsearch":
        from .sync import register_after_request

        state.readiness_probes["elasticsearch"] = backend.ping  # type: ignore[attr-defined]
        register_after_request(app, state)
