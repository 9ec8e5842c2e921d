"""Facet lists from counts: names come from the categories and organisations tables at query
time (whichever backend counted), so a rename shows at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from ...accounts.models import Organisation
from ..models import Category
from .base import FACET_LIMIT, CategoryFacet, SupplierFacet, tie_break

CATEGORIES = Category.__table__
ORGS = Organisation.__table__
_COUNTED = CATEGORIES.alias("counted")
_ANCESTOR = CATEGORIES.alias("ancestor")


def path_within(path: Any, ancestor_path: Any) -> Any:
    """A category path at or below another, compared as an exact prefix (LIKE would read "_"
    in a code as a wildcard)."""
    return func.substr(path, 1, func.length(ancestor_path)) == ancestor_path


# Built once: building a statement costs more than running it on these small tables.
_CATEGORIES_BY_CODE = select(CATEGORIES.c.code, CATEGORIES.c.name, CATEGORIES.c.path).where(
    CATEGORIES.c.code.in_(bindparam("codes", expanding=True))
)
# Each counted category with itself and every category above it.
_CATEGORIES_AND_ANCESTORS = (
    select(_COUNTED.c.id, _ANCESTOR.c.code, _ANCESTOR.c.name, _ANCESTOR.c.path)
    .select_from(_COUNTED)
    .join(_ANCESTOR, path_within(_COUNTED.c.path, _ANCESTOR.c.path))
    .where(_COUNTED.c.id.in_(bindparam("ids", expanding=True)))
)
_SUPPLIERS = select(ORGS.c.id, ORGS.c.name, ORGS.c.is_sme).where(
    ORGS.c.id.in_(bindparam("ids", expanding=True))
)


def category_facets(session: Session, rolled: dict[str, int]) -> list[CategoryFacet]:
    """``rolled``: category code -> matching products in it or below it."""
    if not rolled:
        return []
    rows = session.execute(_CATEGORIES_BY_CODE, {"codes": list(rolled)}).all()
    return _category_list(rows, rolled)


def category_facets_by_id(session: Session, counts: dict[str, int]) -> list[CategoryFacet]:
    """``counts``: category id -> matching products in that very category. Each category
    counts everything below it too (a product in "Powered wheelchairs" counts for
    "Wheelchairs" and "Wheelchairs and mobility"); one statement reads the counted categories
    and every one above them."""
    if not counts:
        return []
    rolled: dict[str, int] = defaultdict(int)
    categories: dict[str, tuple[str, str, str]] = {}
    for category_id, code, name, path in session.execute(
        _CATEGORIES_AND_ANCESTORS, {"ids": list(counts)}
    ):
        rolled[code] += counts[category_id]
        categories[code] = (code, name, path)
    return _category_list(categories.values(), rolled)


def _category_list(
    rows: Iterable[tuple[str, str, str]], rolled: dict[str, int]
) -> list[CategoryFacet]:
    """The facet entries of (code, name, path) rows, most products first."""
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
    names = {r.id: r for r in session.execute(_SUPPLIERS, {"ids": [k for k, _ in top]})}
    return [
        SupplierFacet(id=k, name=names[k].name, is_sme=bool(names[k].is_sme), count=n)
        for k, n in top
        if k in names
    ]


def supplier_refs(session: Session, supplier_ids: set[str]) -> dict[str, tuple[str, bool]]:
    """supplier id -> (name, is_sme)."""
    if not supplier_ids:
        return {}
    rows = session.execute(_SUPPLIERS, {"ids": list(supplier_ids)})
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
