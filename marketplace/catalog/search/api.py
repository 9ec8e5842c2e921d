"""``GET /api/v1/search``: public product search (no token)."""

from __future__ import annotations

from flask import current_app

from ...web import Blueprint, get_session
from . import get_backend
from .base import SearchQuery
from .schemas import SearchArgs, SearchResultSchema

blp = Blueprint(
    "search",
    __name__,
    description="Product search: words, synonyms and typos, filters, facets, cursor pages.",
)


@blp.route("/search", methods=["GET"])
@blp.arguments(SearchArgs, location="query", as_kwargs=True)
@blp.response(200, SearchResultSchema)
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def search(**args):
    """Search the catalogue (public).

    One item per product that has at least one active offer, with its best (lowest unit price)
    active offer. Facet counts apply every active filter except their own. Walk `next_cursor`
    to the end to see every match exactly once.
    """
    return get_backend(current_app).search(get_session(), SearchQuery(**args))
