"""Catalogue business rules: categories, products, offers, stock. Other domains look products and
offers up through these functions, never through the tables.

Every change to a product or one of its offers calls ``search.outbox.product_changed`` in the same
transaction (stock only when an offer runs out or comes back into stock, the only thing search
knows of it), and records an audit event; a change to what price variance shows of a product
(its name, category or benchmark exclusion) also refreshes its statistics
(``pricing.service.product_changed``). Services flush; they never commit.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from sqlalchemy import Select, exists, func, inspect, or_, select, update
from sqlalchemy.orm import Session

from .. import audit
from ..accounts.models import Organisation, OrgType, Role
from ..accounts.service import Principal, require_role
from ..db import among
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed, not_found
from .gtin import gtin_problem, normalise_gtin
from .models import Category, CategoryKind, Offer, OfferPriceHistory, OfferStatus, Product
from .search.outbox import documents_deferred, product_changed
from .units import unit_problem


def get_product(session: Session, product_id: str) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound(f"No product with id {product_id!r}.", code="product-not-found")
    return product


def find_product_by_gtin(session: Session, gtin: str) -> Product | None:
    return session.scalar(select(Product).where(Product.gtin == normalise_gtin(gtin)))


def get_offer(session: Session, offer_id: str) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None:
        raise NotFound(f"No offer with id {offer_id!r}.", code="offer-not-found")
    return offer


def _by_id(session: Session, model: type[Any], ids: Iterable[str]) -> dict[str, Any]:
    """Rows of ``model`` keyed by id, 500 ids per query; unknown ids are left out."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, Any] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            (row.id, row) for row in session.scalars(select(model).where(model.id.in_(chunk)))
        )
    return found


def offers_by_id(session: Session, offer_ids: Iterable[str]) -> dict[str, Offer]:
    """Many offers at once, keyed by id; unknown ids are left out."""
    return _by_id(session, Offer, offer_ids)


def products_by_id(session: Session, product_ids: Iterable[str]) -> dict[str, Product]:
    """Many products at once, keyed by id (ids that do not exist are left out)."""
    return _by_id(session, Product, product_ids)


def find_offer_by_supplier_sku(
    session: Session, supplier_id: str, supplier_sku: str
) -> Offer | None:
    return session.scalar(
        select(Offer).where(
            Offer.supplier_id == supplier_id, Offer.supplier_sku == supplier_sku.strip()
        )
    )


def get_category_by_code(session: Session, code: str) -> Category:
    category = session.scalar(select(Category).where(Category.code == code.strip()))
    if category is None:
        raise NotFound(f"No category with code {code!r}.", code="category-not-found")
    return category


def category_subtree_ids(session: Session, code: str) -> list[str]:
    """The category with this code and all its descendants."""
    category = get_category_by_code(session, code)
    below = Category.path.startswith(category.path, autoescape=True)
    return list(session.scalars(select(Category.id).where(below)))


@dataclass(frozen=True)
class ProductSummary:
    """The few product facts other domains keep beside their own figures."""

    id: str
    name: str
    category_id: str
    units_per_pack: int
    benchmark_excluded: bool
    benchmark_excluded_reason: str | None


def _summaries() -> Select[Any]:
    return select(
        Product.id,
        Product.name,
        Product.category_id,
        Product.units_per_pack,
        Product.benchmark_excluded,
        Product.benchmark_excluded_reason,
    )


def product_summaries(session: Session, product_ids: Iterable[str]) -> dict[str, ProductSummary]:
    """Summaries of many products at once (ids that do not exist are left out)."""
    ids = list(dict.fromkeys(product_ids))
    found: dict[str, ProductSummary] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        rows = session.connection().execute(_summaries().where(among(session, Product.id, chunk)))
        for row in rows:
            found[row.id] = ProductSummary(*row)
    return found


def all_product_summaries(session: Session) -> dict[str, ProductSummary]:
    """Summaries of every product, in one query (for work that touches the whole catalogue)."""
    return {row.id: ProductSummary(*row) for row in session.execute(_summaries())}


def products_by_gtin(session: Session, gtins: Iterable[str]) -> dict[str, ProductSummary]:
    """Summaries of the products with these GTINs (normalised to 14 digits), keyed by GTIN."""
    wanted = list(dict.fromkeys(normalise_gtin(g) for g in gtins))
    found: dict[str, ProductSummary] = {}
    for start in range(0, len(wanted), 1000):
        rows = session.execute(
            _summaries()
            .add_columns(Product.gtin)
            .where(Product.gtin.in_(wanted[start : start + 1000]))
        )
        for *summary, gtin in rows:
            found[gtin] = ProductSummary(*summary)
    return found


def product_ids_in_category(session: Session, code: str) -> list[str]:
    """Ids of the products in a category and its descendants, in id order."""
    return list(
        session.scalars(
            select(Product.id)
            .where(Product.category_id.in_(category_subtree_ids(session, code)))
            .order_by(Product.id)
        )
    )


def cheapest_active_offer(session: Session, product_id: str) -> Offer | None:
    """The active, in-stock offer with the lowest pack price (all offers on a product share its
    units per pack, so the lowest pack price is the lowest unit price). Ties: the offer id's
    stable order, which favours no supplier by name."""
    return session.scalar(
        select(Offer)
        .where(Offer.product_id == product_id, Offer.status == OfferStatus.ACTIVE, Offer.stock > 0)
        .order_by(Offer.pack_price_pence, Offer.id)
        .limit(1)
    )


def cheapest_active_offers(session: Session, product_ids: Iterable[str]) -> dict[str, Offer]:
    """``cheapest_active_offer`` for many products in one query (products without an active,
    in-stock offer are left out)."""
    ids = list(dict.fromkeys(product_ids))
    found: dict[str, Offer] = {}
    for start in range(0, len(ids), 500):
        offers = session.scalars(
            select(Offer)
            .where(
                Offer.product_id.in_(ids[start : start + 500]),
                Offer.status == OfferStatus.ACTIVE,
                Offer.stock > 0,
            )
            .order_by(Offer.product_id, Offer.pack_price_pence, Offer.id)
        )
        for offer in offers:
            found.setdefault(offer.product_id, offer)
    return found


PATHS_PER_STATEMENT = 100
# What a product's search document takes from its category and the categories above it.
_SEARCHED_CATEGORY_FIELDS = ("name", "parent_id", "path", "kind", "phb_eligible", "phb_excluded")


CATEGORY_FIELDS = (
    "code",
    "name",
    "scheme",
    "scheme_code",
    "parent_id",
    "path",
    "kind",
    "phb_eligible",
    "phb_excluded",
)
CATEGORY_LOADER = Principal.system("categories")


def load_categories(
    session: Session, rows: Iterable[dict[str, str]], actor: Principal = CATEGORY_LOADER
) -> int:
    """Create or update categories from rows of ``data/categories.csv`` (parents first).
    Returns how many were created. Idempotent. Each category created or changed is an audit
    event by ``actor`` (its PHB flags decide what a budget may buy). The search documents of
    the products in and below an updated category are refreshed in the same transaction (they
    hold its names, kind and PHB flags)."""
    created = 0
    changed_paths: list[str] = []
    by_code = {c.code: c for c in session.scalars(select(Category))}
    for row in rows:
        parent = by_code.get(row["parent_code"]) if row["parent_code"] else None
        if row["parent_code"] and parent is None:
            raise ValueError(
                f"category {row['code']}: parent {row['parent_code']} is not defined before it"
            )
        values = {
            "name": row["name"],
            "scheme": row["scheme"],
            "scheme_code": row["scheme_code"] or None,
            "parent_id": parent.id if parent else None,
            "path": f"{parent.path if parent else '/'}{row['code']}/",
            "kind": CategoryKind(row["kind"]),
            "phb_eligible": row["phb_eligible"] == "true",
            "phb_excluded": row["phb_excluded"] == "true",
        }
        category = by_code.get(row["code"])
        if category is None:
            category = Category(code=row["code"], **values)
            session.add(category)
            audit.record(
                session,
                actor,
                "category.create",
                "category",
                category.id,
                after=audit.snapshot(category, CATEGORY_FIELDS),
            )
            created += 1
            by_code[category.code] = category
        else:
            before = audit.snapshot(category, CATEGORY_FIELDS)
            for name, value in values.items():
                setattr(category, name, value)
            after = audit.snapshot(category, CATEGORY_FIELDS)
            changed = [name for name in CATEGORY_FIELDS if after[name] != before[name]]
            if changed:
                audit.record(
                    session,
                    actor,
                    "category.update",
                    "category",
                    category.id,
                    before={name: before[name] for name in changed},
                    after={name: after[name] for name in changed},
                )
            if any(name in _SEARCHED_CATEGORY_FIELDS for name in changed):
                changed_paths.append(category.path)
    session.flush()
    if changed_paths:
        _refresh_products_below(session, changed_paths)
    return created


def _refresh_products_below(session: Session, paths: list[str]) -> None:
    """Refresh the search documents of every product in or below these category paths (a path
    below another one adds nothing; a few at a time, so a whole tree's change stays a small
    statement)."""
    tops = [p for p in sorted(set(paths)) if not any(p != q and p.startswith(q) for q in paths)]
    with documents_deferred(session):
        for start in range(0, len(tops), PATHS_PER_STATEMENT):
            below = or_(
                *(
                    Category.path.startswith(path, autoescape=True)
                    for path in tops[start : start + PATHS_PER_STATEMENT]
                )
            )
            products = (
                select(Product.id).join(Category, Category.id == Product.category_id).where(below)
            )
            for product_id in session.scalars(products.order_by(Product.id)):
                product_changed(session, product_id)


def seed_categories(session: Session) -> int:
    """Load the bundled category tree into a database that has no categories yet (a new
    install: products and offers need it). Returns how many were created; 0 when the tree is
    there already, whatever an operator changed in it since."""
    if session.scalar(select(Category.id).limit(1)) is not None:
        return 0
    return load_categories(session, bundled_category_rows())


def bundled_category_rows() -> list[dict[str, str]]:
    with (
        resources.files("marketplace.data").joinpath("categories.csv").open(encoding="utf-8") as fh
    ):
        return list(csv.DictReader(fh))


# --- categories -------------------------------------------------------------------------------


def category_tree(session: Session) -> list[dict[str, Any]]:
    """The whole tree as nested dicts (roots first, children by code), from one query."""
    categories = session.scalars(select(Category).order_by(Category.path)).all()
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    for category in categories:  # ordered by path, so a parent always comes before its children
        node = {
            "id": category.id,
            "code": category.code,
            "name": category.name,
            "kind": category.kind,
            "phb_eligible": category.phb_eligible,
            "phb_excluded": category.phb_excluded,
            "scheme": category.scheme,
            "scheme_code": category.scheme_code,
            "children": [],
        }
        nodes[category.id] = node
        parent = nodes.get(category.parent_id) if category.parent_id else None
        (parent["children"] if parent else roots).append(node)
    return roots


def _category_for(session: Session, code: str, errors: dict[str, list[str]]) -> Category | None:
    category = session.scalar(select(Category).where(Category.code == code.strip()))
    if category is None:
        errors.setdefault("category_code", []).append(f"No category with code {code!r}.")
    return category


# --- products: validation -----------------------------------------------------------------------

PRODUCT_FIELDS = (
    "gtin",
    "name",
    "description",
    "manufacturer",
    "brand",
    "manufacturer_part_number",
    "category_id",
    "unit_of_measure",
    "units_per_pack",
    "attributes",
    "assurance",
    "benchmark_excluded",
    "benchmark_excluded_reason",
)
# What the price-variance statistics keep of a product: a change to one refreshes them.
PRICED_FIELDS = frozenset(
    {"name", "category_id", "benchmark_excluded", "benchmark_excluded_reason"}
)
MAX_UNITS_PER_PACK = 1_000_000
MAX_ATTRIBUTES = 50
NICE_EVIDENCE_TIERS = ("A", "B", "C")  # NICE Evidence Standards Framework (2022) tiers
CONFORMITY_MARKS = ("UKCA", "UKNI", "CE")
DEVICE_CLASSES = ("I", "IIa", "IIb", "III")


def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return len(value) == 10


# Assurance fields for devices and digital tools: name → (check, what it must be).
ASSURANCE_FIELDS: dict[str, tuple[Any, str]] = {
    "dtac_passed": (lambda v: isinstance(v, bool), "true or false"),
    "dtac_assessed_on": (_is_date, "a date, YYYY-MM-DD"),
    "nice_evidence_tier": (
        lambda v: v in NICE_EVIDENCE_TIERS,
        "one of " + ", ".join(NICE_EVIDENCE_TIERS),
    ),
    "ukca_ce_marking": (
        lambda v: (
            isinstance(v, list)
            and bool(v)
            and len(set(v)) == len(v)
            and all(m in CONFORMITY_MARKS for m in v)
        ),
        "a list of distinct marks from " + ", ".join(CONFORMITY_MARKS),
    ),
    "mhra_device_class": (lambda v: v in DEVICE_CLASSES, "one of " + ", ".join(DEVICE_CLASSES)),
    "dspt_compliant": (lambda v: isinstance(v, bool), "true or false"),
}


def assurance_errors(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return ["Must be an object."]
    messages = []
    for key, item in value.items():
        rule = ASSURANCE_FIELDS.get(key)
        if rule is None:
            known = ", ".join(ASSURANCE_FIELDS)
            messages.append(f"Unknown assurance field {key!r}; known fields: {known}.")
        elif not rule[0](item):
            messages.append(f"{key} must be {rule[1]}.")
    return messages


def attribute_errors(value: Any) -> list[str]:
    if not isinstance(value, Mapping):
        return ["Must be an object of key/value pairs."]
    if len(value) > MAX_ATTRIBUTES:
        return [f"At most {MAX_ATTRIBUTES} attributes."]
    messages = []
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 64:
            messages.append("Attribute names are 1 to 64 characters.")
        elif isinstance(item, str):
            if len(item) > 200:
                messages.append(f"{key}: text values are at most 200 characters.")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int | float):
            if item != item or item in (float("inf"), float("-inf")):
                messages.append(f"{key}: numbers must be finite.")
        else:
            messages.append(f"{key}: values are text, numbers, true/false or null.")
    return messages


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value[:limit] if value else None


def _validate_product(
    session: Session, values: dict[str, Any], errors: dict[str, list[str]]
) -> dict[str, Any]:
    """Check and normalise the product fields present in ``values`` (API/CSV names)."""
    clean: dict[str, Any] = {}
    if "gtin" in values:
        gtin = (values["gtin"] or "").strip() or None
        if gtin is not None:
            problem = gtin_problem(gtin)
            if problem:
                errors.setdefault("gtin", []).append(problem)
            else:
                gtin = normalise_gtin(gtin)
        clean["gtin"] = gtin
    if "name" in values:
        name = (values["name"] or "").strip()
        if not name:
            errors.setdefault("name", []).append("A name is required.")
        clean["name"] = name[:300]
    for field, limit in (
        ("description", 5000),
        ("manufacturer", 200),
        ("brand", 200),
        ("manufacturer_part_number", 100),
    ):
        if field in values:
            clean[field] = _text(values[field], limit)
    if "category_code" in values:
        category = _category_for(session, values["category_code"] or "", errors)
        if category is not None:
            clean["category_id"] = category.id
    if "unit_of_measure" in values:
        unit = (values["unit_of_measure"] or "").strip().upper()
        problem = unit_problem(unit)
        if problem:
            errors.setdefault("unit_of_measure", []).append(problem)
        clean["unit_of_measure"] = unit
    if "units_per_pack" in values:
        units = values["units_per_pack"]
        if isinstance(units, bool) or not isinstance(units, int):
            errors.setdefault("units_per_pack", []).append("Must be a whole number.")
        elif not 1 <= units <= MAX_UNITS_PER_PACK:
            errors.setdefault("units_per_pack", []).append(
                f"Must be between 1 and {MAX_UNITS_PER_PACK}."
            )
        clean["units_per_pack"] = units
    for field, check in (("attributes", attribute_errors), ("assurance", assurance_errors)):
        if field in values:
            value = values[field] if values[field] is not None else {}
            messages = check(value)
            if messages:
                errors.setdefault(field, []).extend(messages)
            clean[field] = dict(value) if isinstance(value, Mapping) else value
    return clean


def _raise_if(errors: dict[str, list[str]], detail: str) -> None:
    if errors:
        raise ValidationFailed(detail, errors=errors)


def _refuse_duplicate_gtin(session: Session, gtin: str | None, product_id: str | None) -> None:
    if gtin is None:
        return
    existing = session.scalar(select(Product.id).where(Product.gtin == gtin))
    if existing is not None and existing != product_id:
        raise Conflict(
            f"A product with GTIN {gtin} already exists; list an offer on it instead.",
            code="duplicate-gtin",
            errors={"gtin": ["Already in the catalogue."]},
            existing_product_id=existing,
        )


def _filter_path(session: Session, code: str) -> str:
    """The materialised path of a category used as a list filter (it and its descendants)."""
    path = session.scalar(select(Category.path).where(Category.code == code.strip()))
    if path is None:
        raise ValidationFailed(
            "Unknown category.", errors={"category": [f"No category with code {code!r}."]}
        )
    return path


# --- products: writes ---------------------------------------------------------------------------


def acting_supplier_id(session: Session, actor: Principal, supplier_id: str | None) -> str:
    """The supplier a write is for: a supplier acts for itself; an operator names one."""
    if actor.role == Role.SUPPLIER:
        if supplier_id not in (None, actor.organisation_id):
            raise Forbidden(
                "Suppliers list products and offers for their own organisation only.",
                code="other-supplier",
            )
        return actor.organisation_id  # type: ignore[return-value]
    require_role(actor, Role.OPERATOR)
    if not supplier_id:
        raise ValidationFailed(
            "An operator must say which supplier the offer is for.",
            errors={"supplier_id": ["Required for operators."]},
        )
    org = session.get(Organisation, supplier_id)
    if org is None or org.type != OrgType.SUPPLIER:
        raise ValidationFailed(
            "No such supplier.", errors={"supplier_id": [f"No supplier with id {supplier_id!r}."]}
        )
    return org.id


def create_product(
    session: Session,
    actor: Principal,
    *,
    name: str,
    category_code: str,
    gtin: str | None = None,
    units_per_pack: int = 1,
    unit_of_measure: str = "EA",
    description: str | None = None,
    manufacturer: str | None = None,
    brand: str | None = None,
    manufacturer_part_number: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    assurance: Mapping[str, Any] | None = None,
    supplier_id: str | None = None,
) -> Product:
    """Add a product to the catalogue (suppliers and operators). A GTIN already in the
    catalogue is a 409 naming the existing product."""
    require_role(actor, Role.SUPPLIER, Role.OPERATOR)
    errors: dict[str, list[str]] = {}
    values = _validate_product(
        session,
        {
            "gtin": gtin,
            "name": name,
            "category_code": category_code,
            "units_per_pack": units_per_pack,
            "unit_of_measure": unit_of_measure,
            "description": description,
            "manufacturer": manufacturer,
            "brand": brand,
            "manufacturer_part_number": manufacturer_part_number,
            "attributes": attributes,
            "assurance": assurance,
        },
        errors,
    )
    _raise_if(errors, "The product is not valid.")
    _refuse_duplicate_gtin(session, values["gtin"], None)
    creator = None
    if actor.role == Role.SUPPLIER or supplier_id:
        creator = acting_supplier_id(session, actor, supplier_id)
    product = Product(created_by_supplier_id=creator, **values)
    session.add(product)
    session.flush()
    audit.record(
        session,
        actor,
        "product.create",
        "product",
        product.id,
        after=audit.snapshot(product, PRODUCT_FIELDS),
    )
    product_changed(session, product.id)
    return product


def _may_edit_product(session: Session, actor: Principal, product: Product) -> None:
    if actor.is_operator:
        return
    if actor.role != Role.SUPPLIER or product.created_by_supplier_id != actor.organisation_id:
        raise Forbidden(
            "Only an operator, or the supplier that created the product, may change it.",
            code="product-not-editable",
        )
    others = session.scalar(
        select(
            exists().where(
                Offer.product_id == product.id, Offer.supplier_id != actor.organisation_id
            )
        )
    )
    if others:
        raise Forbidden(
            "Other suppliers list offers on this product; ask an operator to change it.",
            code="product-shared",
        )


def update_product(
    session: Session, actor: Principal, product_id: str, changes: Mapping[str, Any]
) -> Product:
    """Change a product's fields (only those in ``changes``). Benchmark exclusion is for
    operators only and needs a reason. An unchanged request writes nothing."""
    product = get_product(session, product_id)
    _may_edit_product(session, actor, product)
    changes = dict(changes)
    errors: dict[str, list[str]] = {}
    values = _validate_product(session, changes, errors)
    if "benchmark_excluded" in changes or "benchmark_excluded_reason" in changes:
        if not actor.is_operator:
            raise Forbidden(
                "Only an operator may exclude a product from price benchmarking.",
                code="operator-only",
            )
        excluded = changes.get("benchmark_excluded", product.benchmark_excluded)
        reason = _text(
            changes.get("benchmark_excluded_reason", product.benchmark_excluded_reason), 500
        )
        if excluded and not reason:
            errors.setdefault("benchmark_excluded_reason", []).append(
                "Say why the product is excluded from benchmarking."
            )
        values["benchmark_excluded"] = bool(excluded)
        values["benchmark_excluded_reason"] = reason if excluded else None
    _raise_if(errors, "The product change is not valid.")
    if "gtin" in values:
        _refuse_duplicate_gtin(session, values["gtin"], product.id)
    before = audit.snapshot(product, PRODUCT_FIELDS)
    for name, value in values.items():
        if getattr(product, name) != value:
            setattr(product, name, value)
    after = audit.snapshot(product, PRODUCT_FIELDS)
    if after != before:
        session.flush()
        changed = {k: after[k] for k in after if after[k] != before[k]}
        audit.record(
            session,
            actor,
            "product.update",
            "product",
            product.id,
            before={k: before[k] for k in changed},
            after=changed,
        )
        product_changed(session, product.id)
        if PRICED_FIELDS & changed.keys():
            # pricing reads the catalogue (names, categories), so it is imported here, not above
            from ..pricing import service as pricing

            pricing.product_changed(session, product.id)
    return product


# --- products: reads ----------------------------------------------------------------------------


def list_products(
    session: Session,
    *,
    category_code: str | None = None,
    supplier_id: str | None = None,
    kind: CategoryKind | None = None,
    gtin: str | None = None,
) -> Select[tuple[Product]]:
    """Products filtered by category (with its descendants), by a supplier with an active offer,
    by category kind, or by GTIN."""
    stmt = select(Product)
    if category_code or kind:
        stmt = stmt.join(Category, Category.id == Product.category_id)
    if category_code:
        stmt = stmt.where(
            Category.path.startswith(_filter_path(session, category_code), autoescape=True)
        )
    if kind:
        stmt = stmt.where(Category.kind == kind)
    if supplier_id:
        stmt = stmt.where(
            exists().where(
                Offer.product_id == Product.id,
                Offer.supplier_id == supplier_id,
                Offer.status == OfferStatus.ACTIVE,
            )
        )
    if gtin:
        stmt = stmt.where(Product.gtin == normalise_gtin(gtin))
    return stmt


def active_offers(session: Session, product_id: str) -> list[Offer]:
    """A product's active offers, cheapest unit price first. Offers on one product share its
    units per pack, so pack price orders them by unit price."""
    return list(
        session.scalars(
            select(Offer)
            .where(Offer.product_id == product_id, Offer.status == OfferStatus.ACTIVE)
            .order_by(Offer.pack_price_pence, Offer.id)
        )
    )


def offer_summaries(session: Session, product_ids: list[str]) -> dict[str, tuple[int, int | None]]:
    """Per product: (number of active offers, lowest active pack price)."""
    if not product_ids:
        return {}
    rows = session.execute(
        select(Offer.product_id, func.count(), func.min(Offer.pack_price_pence))
        .where(Offer.product_id.in_(product_ids), Offer.status == OfferStatus.ACTIVE)
        .group_by(Offer.product_id)
    )
    return {product_id: (count, lowest) for product_id, count, lowest in rows}


# --- offers -------------------------------------------------------------------------------------

OFFER_FIELDS = (
    "product_id",
    "supplier_id",
    "supplier_sku",
    "pack_price_pence",
    "vat_rate_percent",
    "stock",
    "lead_time_days",
    "min_order_qty",
    "price_breaks",
    "status",
)
PRICE_FIELDS = ("pack_price_pence", "vat_rate_percent", "price_breaks")
VAT_RATES = (Decimal(0), Decimal(5), Decimal(20))
MAX_PRICE_PENCE = 10**9  # £10 million a pack
MAX_QUANTITY = 10**9
MAX_PRICE_BREAKS = 20


def vat_rate(value: Any) -> Decimal | None:
    """The VAT rate as a Decimal, or None when it is not one of the UK rates (0, 5, 20)."""
    if isinstance(value, bool):
        return None
    try:
        rate = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    if not rate.is_finite() or rate not in VAT_RATES:
        return None
    return rate.quantize(Decimal(1))


def _whole(value: Any, field: str, low: int, high: int, errors: dict[str, list[str]]) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        errors.setdefault(field, []).append("Must be a whole number.")
    elif not low <= value <= high:
        errors.setdefault(field, []).append(f"Must be between {low} and {high}.")


def price_break_errors(breaks: Any, pack_price_pence: int) -> list[str]:
    """Breaks: ascending ``min_qty`` (each at least 2), non-increasing prices, each below the
    base pack price."""
    if not isinstance(breaks, list):
        return ["Must be a list of {min_qty, pack_price_pence}."]
    if len(breaks) > MAX_PRICE_BREAKS:
        return [f"At most {MAX_PRICE_BREAKS} price breaks."]
    messages: list[str] = []
    previous: Mapping[str, Any] | None = None
    for i, item in enumerate(breaks, start=1):
        if not isinstance(item, Mapping) or set(item) != {"min_qty", "pack_price_pence"}:
            messages.append(f"Break {i}: needs exactly min_qty and pack_price_pence.")
            continue
        qty, price = item["min_qty"], item["pack_price_pence"]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (qty, price)):
            messages.append(f"Break {i}: min_qty and pack_price_pence are whole numbers.")
            continue
        if not 2 <= qty <= MAX_QUANTITY:
            messages.append(f"Break {i}: min_qty must be at least 2.")
        if price <= 0:
            messages.append(f"Break {i}: pack_price_pence must be positive.")
        if isinstance(pack_price_pence, int) and price >= pack_price_pence:
            messages.append(
                f"Break {i}: {price}p is not below the base pack price ({pack_price_pence}p)."
            )
        if previous is not None:
            if qty <= previous["min_qty"]:
                messages.append(f"Break {i}: min_qty must be above the previous break's.")
            if price > previous["pack_price_pence"]:
                messages.append(f"Break {i}: a larger quantity cannot cost more per pack.")
        previous = item
    return messages


def _validate_offer(values: dict[str, Any], current: Offer | None) -> dict[str, Any]:
    """Check the offer fields present in ``values``; raise ValidationFailed naming each field."""
    errors: dict[str, list[str]] = {}
    clean: dict[str, Any] = {}
    if "pack_price_pence" in values:
        _whole(values["pack_price_pence"], "pack_price_pence", 1, MAX_PRICE_PENCE, errors)
        clean["pack_price_pence"] = values["pack_price_pence"]
    if "vat_rate_percent" in values:
        rate = vat_rate(values["vat_rate_percent"])
        if rate is None:
            errors.setdefault("vat_rate_percent", []).append("Must be 0, 5 or 20 (UK VAT rates).")
        clean["vat_rate_percent"] = rate
    for field, low in (("stock", 0), ("lead_time_days", 0), ("min_order_qty", 1)):
        if field in values:
            high = 3650 if field == "lead_time_days" else MAX_QUANTITY
            _whole(values[field], field, low, high, errors)
            clean[field] = values[field]
    if "status" in values:
        try:
            clean["status"] = OfferStatus(values["status"])
        except ValueError:
            errors.setdefault("status", []).append("Must be active or paused.")
    if "supplier_sku" in values:
        clean["supplier_sku"] = _text(values["supplier_sku"], 100)
    price = clean.get("pack_price_pence", current.pack_price_pence if current else None)
    if "price_breaks" in values or ("pack_price_pence" in clean and current is not None):
        breaks = values.get("price_breaks", current.price_breaks if current else [])
        breaks = [] if breaks is None else breaks
        messages = price_break_errors(breaks, price)
        if messages:
            errors.setdefault("price_breaks", []).extend(messages)
        elif "price_breaks" in values:
            clean["price_breaks"] = [
                {"min_qty": b["min_qty"], "pack_price_pence": b["pack_price_pence"]} for b in breaks
            ]
    _raise_if(errors, "The offer is not valid.")
    return clean


def _refuse_duplicate_sku(
    session: Session, supplier_id: str, sku: str | None, offer_id: str | None
) -> None:
    if not sku:
        return
    existing = find_offer_by_supplier_sku(session, supplier_id, sku)
    if existing is not None and existing.id != offer_id:
        raise Conflict(
            f"Supplier SKU {sku!r} is already used by another of your offers.",
            code="duplicate-supplier-sku",
            errors={"supplier_sku": ["Already used by another offer."]},
            existing_offer_id=existing.id,
        )


def _record_price(session: Session, offer: Offer, actor: Principal) -> None:
    session.add(
        OfferPriceHistory(
            offer_id=offer.id,
            pack_price_pence=offer.pack_price_pence,
            vat_rate_percent=offer.vat_rate_percent,
            price_breaks=list(offer.price_breaks or []),
            changed_by=actor.label,
        )
    )


def create_offer(
    session: Session,
    actor: Principal,
    *,
    product_id: str,
    pack_price_pence: int,
    supplier_id: str | None = None,
    vat_rate_percent: Decimal | int | str = Decimal(20),
    stock: int = 0,
    lead_time_days: int = 0,
    min_order_qty: int = 1,
    price_breaks: list[dict[str, int]] | None = None,
    status: OfferStatus | str = OfferStatus.ACTIVE,
    supplier_sku: str | None = None,
) -> Offer:
    """List a product: a supplier for itself, an operator for any supplier. One offer per
    (supplier, product); the first price is the first row of its price history."""
    require_role(actor, Role.SUPPLIER, Role.OPERATOR)
    supplier = acting_supplier_id(session, actor, supplier_id)
    product = session.get(Product, product_id)
    if product is None:
        raise ValidationFailed(
            "No such product.", errors={"product_id": [f"No product with id {product_id!r}."]}
        )
    values = _validate_offer(
        {
            "pack_price_pence": pack_price_pence,
            "vat_rate_percent": vat_rate_percent,
            "stock": stock,
            "lead_time_days": lead_time_days,
            "min_order_qty": min_order_qty,
            "price_breaks": price_breaks or [],
            "status": status,
            "supplier_sku": supplier_sku,
        },
        None,
    )
    existing = session.scalar(
        select(Offer.id).where(Offer.supplier_id == supplier, Offer.product_id == product.id)
    )
    if existing is not None:
        raise Conflict(
            "This supplier already lists this product; change that offer instead.",
            code="duplicate-offer",
            existing_offer_id=existing,
        )
    _refuse_duplicate_sku(session, supplier, values["supplier_sku"], None)
    offer = Offer(product_id=product.id, supplier_id=supplier, **values)
    session.add(offer)
    session.flush()
    _record_price(session, offer, actor)
    audit.record(
        session, actor, "offer.create", "offer", offer.id, after=audit.snapshot(offer, OFFER_FIELDS)
    )
    product_changed(session, product.id)
    return offer


def _changeable_offer(session: Session, actor: Principal, offer_id: str) -> Offer:
    offer = session.get(Offer, offer_id)
    if offer is None or not (actor.is_operator or offer.supplier_id == actor.organisation_id):
        raise not_found("offer", offer_id)
    return offer


def apply_offer_changes(
    session: Session, actor: Principal, offer: Offer, changes: Mapping[str, Any]
) -> bool:
    """Apply ``changes`` to an offer the actor may change; True when anything changed. A price
    change (pack price, VAT rate, price breaks) appends a row to the price history."""
    values = _validate_offer(dict(changes), offer)
    if "supplier_sku" in values:
        _refuse_duplicate_sku(session, offer.supplier_id, values["supplier_sku"], offer.id)
    before = audit.snapshot(offer, OFFER_FIELDS)
    for name, value in values.items():
        if getattr(offer, name) != value:
            setattr(offer, name, value)
    after = audit.snapshot(offer, OFFER_FIELDS)
    changed = {k: after[k] for k in after if after[k] != before[k]}
    if not changed:
        return False
    session.flush()
    if any(field in changed for field in PRICE_FIELDS):
        _record_price(session, offer, actor)
    audit.record(
        session,
        actor,
        "offer.update",
        "offer",
        offer.id,
        before={k: before[k] for k in changed},
        after=changed,
    )
    product_changed(session, offer.product_id)
    return True


def update_offer(
    session: Session, actor: Principal, offer_id: str, changes: Mapping[str, Any]
) -> Offer:
    """Change an offer (its supplier or an operator; anyone else gets 404)."""
    offer = _changeable_offer(session, actor, offer_id)
    apply_offer_changes(session, actor, offer, changes)
    return offer


def visible_offer(session: Session, actor: Principal | None, offer_id: str) -> Offer:
    """An active offer is public; a paused one is seen only by its supplier and operators."""
    offer = session.get(Offer, offer_id)
    if offer is None or (offer.status != OfferStatus.ACTIVE and not _owns(actor, offer)):
        raise not_found("offer", offer_id)
    return offer


def _owns(actor: Principal | None, offer: Offer) -> bool:
    return actor is not None and (
        actor.is_operator
        or (actor.role == Role.SUPPLIER and actor.organisation_id == offer.supplier_id)
    )


def list_offers(
    session: Session,
    actor: Principal,
    *,
    supplier_id: str | None = None,
    product_id: str | None = None,
    status: OfferStatus | None = None,
    category_code: str | None = None,
    supplier_sku: str | None = None,
) -> Select[tuple[Offer]]:
    """A supplier's own offers; an operator sees every supplier's (optionally one)."""
    require_role(actor, Role.SUPPLIER, Role.OPERATOR)
    stmt = select(Offer)
    if actor.role == Role.SUPPLIER:
        stmt = stmt.where(Offer.supplier_id == actor.organisation_id)
    elif supplier_id:
        stmt = stmt.where(Offer.supplier_id == supplier_id)
    if product_id:
        stmt = stmt.where(Offer.product_id == product_id)
    if status:
        stmt = stmt.where(Offer.status == status)
    if supplier_sku:
        stmt = stmt.where(Offer.supplier_sku == supplier_sku.strip())
    if category_code:
        path = _filter_path(session, category_code)
        stmt = stmt.where(
            Offer.product_id.in_(
                select(Product.id)
                .join(Category, Category.id == Product.category_id)
                .where(Category.path.startswith(path, autoescape=True))
            )
        )
    return stmt


def price_history(session: Session, offer: Offer) -> Select[tuple[OfferPriceHistory]]:
    return select(OfferPriceHistory).where(OfferPriceHistory.offer_id == offer.id)


# --- ordering: price for a quantity, stock ---------------------------------------------------------


def price_for_quantity(offer: Offer, quantity: int) -> int:
    """The pack price in pence for an order of ``quantity`` packs, after volume breaks: the
    price of the largest break whose ``min_qty`` the quantity reaches, else the base price."""
    _require_quantity(quantity)
    price = offer.pack_price_pence
    for item in offer.price_breaks or []:
        if quantity >= item["min_qty"]:
            price = min(price, item["pack_price_pence"])
    return price


def _require_quantity(quantity: int) -> None:
    if (
        isinstance(quantity, bool)
        or not isinstance(quantity, int)
        or not 1 <= quantity <= MAX_QUANTITY
    ):
        raise ValidationFailed(
            "The quantity must be a whole number of packs, at least 1.",
            errors={"quantity": ["Must be at least 1."]},
        )


def _expire_cached(session: Session, offer_id: str) -> None:
    """The guarded UPDATE bypasses the ORM: make a loaded offer re-read its stock."""
    cached = session.identity_map.get(inspect(Offer).identity_key_from_primary_key((offer_id,)))
    if cached is not None:
        session.expire(cached, ["stock"])


def _stock_status_changed(session: Session, product_id: str) -> None:
    """An offer went out of stock or came back: tell search. The search document knows an
    offer's stock only as in stock or not, so a stock change that stays on the same side of
    zero changes nothing there (and ordering does not pay for a document refresh per line)."""
    product_changed(session, product_id)


def reserve_stock(session: Session, offer_id: str, quantity: int) -> int:
    """Take ``quantity`` packs out of an active offer's stock in ONE guarded UPDATE, so that
    concurrent orders can never oversell. Returns the stock left. A shortfall is a 409 naming
    what is missing; nothing changes then."""
    _require_quantity(quantity)
    result = session.execute(
        update(Offer)
        .where(Offer.id == offer_id, Offer.stock >= quantity, Offer.status == OfferStatus.ACTIVE)
        .values(stock=Offer.stock - quantity)
        .returning(Offer.stock, Offer.product_id)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    _expire_cached(session, offer_id)
    if row is None:
        current = session.execute(
            select(Offer.stock, Offer.status).where(Offer.id == offer_id)
        ).first()
        if current is None:
            raise not_found("offer", offer_id)
        stock, status = current
        if status != OfferStatus.ACTIVE:
            raise Conflict(
                f"Offer {offer_id} is {status.value}; it cannot be ordered.",
                code="offer-not-active",
            )
        raise Conflict(
            f"Only {stock} in stock for offer {offer_id}; {quantity} requested, "
            f"short by {quantity - stock}.",
            code="insufficient-stock",
            offer_id=offer_id,
            requested=quantity,
            available=stock,
            shortfall=quantity - stock,
        )
    if row.stock == 0:
        _stock_status_changed(session, row.product_id)
    return row.stock


def release_stock(session: Session, offer_id: str, quantity: int) -> int:
    """Put ``quantity`` packs back (a cancelled or rejected order). Returns the stock now."""
    _require_quantity(quantity)
    result = session.execute(
        update(Offer)
        .where(Offer.id == offer_id)
        .values(stock=Offer.stock + quantity)
        .returning(Offer.stock, Offer.product_id)
        .execution_options(synchronize_session=False)
    )
    row = result.first()
    _expire_cached(session, offer_id)
    if row is None:
        raise not_found("offer", offer_id)
    if row.stock == quantity:
        _stock_status_changed(session, row.product_id)
    return row.stock
