"""Facet lists from counts: names come from the categories and organisations tables at query
time (whichever backend counted), so a rename shows at once."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ...accounts.models import Organisation
from ..models import Category
from .base import FACET_LIMIT, CategoryFacet, SupplierFacet, tie_break


def category_facets(session: Session, rolled: dict[str, int]) -> list[CategoryFacet]:
    """``rolled``: category code -> matching products in it or below it."""
    if not rolled:
        return []
    rows = session.execute(
        select(Category.code, Category.name, Category.path).where(Category.code.in_(list(rolled)))
    ).all()
    facets = []
    for code, name, path in rows:
        trail = path.strip("/").split("/")
        facets.append(
            CategoryFacet(
                code=code,
                name=name,
                parent_code=trail[-2] if len(trail) > 1 else None,
                count=rolled[code],
            )
        )
    facets.sort(key=lambda f: (-f.count, f.code))
    return facets[:FACET_LIMIT]


def top_suppliers(counts: dict[str, int]) -> list[tuple[str, int]]:
    """The suppliers a facet shows: by number of matching products; equal counts in a stable
    hash order of the supplier id, so no name or id sorts first."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], tie_break(kv[0])))[:FACET_LIMIT]


def supplier_facets(session: Session, counts: dict[str, int]) -> list[SupplierFacet]:
    """The top suppliers (``top_suppliers``) with their names."""
    top = top_suppliers(counts)
    if not top:
        return []
    names = {
        r.id: r
        for r in session.execute(
            select(Organisation.id, Organisation.name, Organisation.is_sme).where(
                Organisation.id.in_([k for k, _ in top])
            )
        )
    }
    return [
        SupplierFacet(id=k, name=names[k].name, is_sme=bool(names[k].is_sme), count=n)
        for k, n in top
        if k in names
    ]


def supplier_refs(session: Session, supplier_ids: set[str]) -> dict[str, tuple[str, bool]]:
    """supplier id -> (name, is_sme)."""
    if not supplier_ids:
        return {}
    rows = session.execute(
        select(Organisation.id, Organisation.name, Organisation.is_sme).where(
            Organisation.id.in_(list(supplier_ids))
        )
    )
    return {r.id: (r.name, bool(r.is_sme)) for r in rows}


def category_refs(session: Session, category_ids: set[str]) -> dict[str, tuple[str, str]]:
    """category id -> (code, name)."""
    if not category_ids:
        return {}
    rows = session.execute(
        select(Category.id, Category.code, Category.name).where(Category.id.in_(list(category_ids)))
    )
    return {r.id: (r.code, r.name) for r in rows}


def category_path(session: Session, code: str) -> str | None:
    """The category's materialised path, or None when there is no such code."""
    return session.scalar(select(Category.path).where(Category.code == code))
