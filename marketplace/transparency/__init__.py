"""Public open data: OCDS releases and records for trust orders, the change feed, PHB spending
aggregates, bulk downloads, and the server-rendered price-transparency pages."""

from __future__ import annotations

from flask import Blueprint


def pages_blueprint() -> Blueprint:
    """The HTML pages (``/``, ``/products/<id>``, ``/open-data``), outside ``/api/v1``."""
    from .pages import blp

    return blp
