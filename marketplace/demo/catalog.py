"""Demo catalogue: the category tree (CPV/EMDN-mapped)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ..catalog import service as catalog
from . import DemoContext


def seed_categories(session: Session, context: DemoContext) -> None:
    context.progress("Loading the category tree…")
    catalog.load_categories(session, catalog.bundled_category_rows())
