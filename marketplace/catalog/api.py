"""Catalogue endpoints: categories, products, offers, price history and bulk listing."""

from __future__ import annotations

import io
from typing import IO

from flask import request

from ..accounts.models import Role
from ..auth import authenticated, current_principal, optional_principal
from ..errors import Problem
from ..idempotency import idempotent, upload_fingerprint
from ..money import unit_price
from ..pagination import Page, paginate
from ..ratelimit import import_limited
from ..schemas import PageArgs, page_of
from ..web import Blueprint, get_session
from . import offer_import, service
from .models import Offer, OfferPriceHistory, Product
from .schemas import (
    CategoryTreeSchema,
    ImportArgs,
    ImportReportSchema,
    OfferCreateSchema,
    OfferListArgs,
    OfferSchema,
    OfferUpdateSchema,
    PriceHistorySchema,
    ProductCreateSchema,
    ProductDetailSchema,
    ProductListArgs,
    ProductSummarySchema,
    ProductUpdateSchema,
)

blp = Blueprint(
    "catalog",
    __name__,
    description="Categories, products (one per GTIN), suppliers' offers and bulk price lists.",
)


@blp.route("/categories", methods=["GET"])
@blp.response(200, CategoryTreeSchema)
def list_categories():
    """The category tree (public): CPV/EMDN mapping and personal-health-budget flags."""
    return {"items": service.category_tree(get_session())}


# --- products -----------------------------------------------------------------------------------


@blp.route("/products", methods=["GET"])
@blp.arguments(ProductListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(ProductSummarySchema))
def list_products(
    limit: int, cursor: str | None, category=None, supplier_id=None, kind=None, gtin=None
):
    """Products (public), by name; filter by category (with its descendants), supplier or kind."""
    session = get_session()
    stmt = service.list_products(
        session, category_code=category, supplier_id=supplier_id, kind=kind, gtin=gtin
    )
    page = paginate(session, stmt, order_by=[Product.name, Product.id], cursor=cursor, limit=limit)
    summaries = service.offer_summaries(session, [p.id for p in page.items])
    items = []
    for product in page.items:
        count, lowest = summaries.get(product.id, (0, None))
        items.append(
            _With(
                product,
                offer_count=count,
                lowest_pack_price_pence=lowest,
                lowest_unit_price_pence=(
                    unit_price(lowest, product.units_per_pack) if lowest is not None else None
                ),
            )
        )
    return Page(items=items, next_cursor=page.next_cursor)


@blp.route("/products", methods=["POST"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(ProductCreateSchema)
@blp.response(201, ProductDetailSchema)
@blp.alt_response(409, response="CONFLICT", description="The GTIN exists: see existing_product_id.")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def create_product(body: dict):
    """Add a product to the catalogue (suppliers, operators)."""
    product = service.create_product(get_session(), current_principal(), **body)
    return _detail(product)


@blp.route("/products/<string:product_id>", methods=["GET"])
@blp.response(200, ProductDetailSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_product(product_id: str):
    """A product with all its active offers, cheapest unit price first (public)."""
    return _detail(service.get_product(get_session(), product_id))


@blp.route("/products/<string:product_id>", methods=["PATCH"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(ProductUpdateSchema)
@blp.response(200, ProductDetailSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def update_product(body: dict, product_id: str):
    """Change a product: operators, or the supplier that created it while no other supplier
    lists it. Benchmark exclusion (with a reason) is for operators only."""
    product = service.update_product(get_session(), current_principal(), product_id, body)
    return _detail(product)


class _With:
    """An object seen with a few extra attributes (derived values for a response)."""

    def __init__(self, obj: object, **extra: object):
        self._obj = obj
        self.__dict__.update(extra)

    def __getattr__(self, name: str) -> object:
        return getattr(self._obj, name)


def _detail(product: Product) -> _With:
    return _With(product, offers=service.active_offers(get_session(), product.id))


# --- offers ---------------------------------------------------------------------------------------


@blp.route("/offers", methods=["GET"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(OfferListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(OfferSchema))
def list_offers(limit: int, cursor: str | None, category=None, **filters):
    """The caller's own offers (suppliers), or every supplier's (operators)."""
    session = get_session()
    stmt = service.list_offers(session, current_principal(), category_code=category, **filters)
    return paginate(
        session, stmt, order_by=[Offer.created_at, Offer.id], cursor=cursor, limit=limit
    )


@blp.route("/offers", methods=["POST"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(OfferCreateSchema)
@blp.response(201, OfferSchema)
@blp.alt_response(409, response="CONFLICT", description="Already listed: see existing_offer_id.")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def create_offer(body: dict):
    """List a product: suppliers for themselves, operators for any supplier (`supplier_id`)."""
    return service.create_offer(get_session(), current_principal(), **body)


@blp.route("/offers/<string:offer_id>", methods=["GET"])
@blp.response(200, OfferSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_offer(offer_id: str):
    """An offer: active ones are public; paused ones only for their supplier and operators."""
    return service.visible_offer(get_session(), optional_principal(), offer_id)


@blp.route("/offers/<string:offer_id>", methods=["PATCH"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(OfferUpdateSchema)
@blp.response(200, OfferSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
def update_offer(body: dict, offer_id: str):
    """Change price, VAT, stock, lead time, MOQ, price breaks or status (pause/resume). Each
    price change is appended to the price history; an unchanged request writes nothing."""
    return service.update_offer(get_session(), current_principal(), offer_id, body)


@blp.route("/offers/<string:offer_id>/price-history", methods=["GET"])
@blp.arguments(PageArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(PriceHistorySchema))
@blp.alt_response(404, response="NOT_FOUND")
def offer_price_history(limit: int, cursor: str | None, offer_id: str):
    """Every price the offer has had, oldest first (public for active offers)."""
    session = get_session()
    offer = service.visible_offer(session, optional_principal(), offer_id)
    return paginate(
        session,
        service.price_history(session, offer),
        order_by=[OfferPriceHistory.effective_from, OfferPriceHistory.id],
        cursor=cursor,
        limit=limit,
    )


CSV_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            "text/csv": {"schema": {"type": "string"}},
        },
    }
}


@blp.route("/offers/import", methods=["POST"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@import_limited
@idempotent(fingerprint=upload_fingerprint)
@blp.arguments(ImportArgs, location="query", as_kwargs=True)
@blp.response(200, ImportReportSchema)
@blp.alt_response(400, response="BAD_REQUEST", description="The file is not a readable offer CSV.")
@blp.alt_response(415, response="UNSUPPORTED_MEDIA_TYPE")
@blp.alt_response(422, response="UNPROCESSABLE_ENTITY")
@blp.doc(**CSV_BODY_DOC)
def import_offers(dry_run: bool, supplier_id: str | None):
    """Bulk listing from a price-list CSV (DESIGN §9 columns), as a multipart `file` or a raw
    `text/csv` body. Valid rows are applied; each invalid row is reported (row, column,
    reason). `dry_run=true` reports what would happen and writes nothing. With an
    `Idempotency-Key`, a retry of the same file and options returns the first report and
    writes nothing more."""
    report = offer_import.import_offers(
        get_session(),
        current_principal(),
        _uploaded_csv(),
        supplier_id=supplier_id,
        dry_run=dry_run,
    )
    return report


def _uploaded_csv() -> IO[bytes]:
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise offer_import.MalformedFile("Send the CSV in the multipart field 'file'.")
        return upload.stream
    if request.mimetype in ("text/csv", "text/plain", "application/csv"):
        stream = request.stream
        return stream if isinstance(stream, io.BufferedIOBase) else io.BufferedReader(stream)  # type: ignore[arg-type]
    raise Problem(
        "Send the price list as multipart/form-data (field 'file') or as a text/csv body.",
        status=415,
        code="unsupported-media-type",
    )
