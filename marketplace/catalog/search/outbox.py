"""How catalogue changes reach the search index.

The catalogue service calls ``product_changed(session, product_id)`` in the same transaction as
every change to a product or to one of its offers (create, update, pause, price change, stock).
"""

from __future__ import annotations

from sqlalchemy.orm import Session


def product_changed(session: Session, product_id: str) -> None:
    """Record that a product's searchable data changed (to be implemented by the search work)."""
