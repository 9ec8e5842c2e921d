"""The search API contract (query parameters and the response)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from ...schemas import CompiledDump, Pence, QueryInteger, UnitPrice
from ..models import CategoryKind
from .base import DEFAULT_LIMIT, MAX_LIMIT, SORTS

_PRICE = re.compile(r"[0-9]{1,12}(\.[0-9]{1,4})?")


class QueryUnitPrice(fields.Field):
    """Pence per base unit in a query string: digits with up to 4 decimal places (``2.5``)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        if not isinstance(value, str) or not _PRICE.fullmatch(value.strip()):
            raise ma.ValidationError(
                "Must be a number of pence per unit with at most 4 decimal places, e.g. 2.5."
            )
        return Decimal(value.strip())


class SearchArgs(ma.Schema):
    q = fields.String(
        load_default=None,
        validate=validate.Length(max=200),
        metadata={"description": "Words, a GTIN (8-14 digits) or a manufacturer part number."},
    )
    category = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=32),
        metadata={"description": "A category code; its descendants are included."},
    )
    supplier = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "A supplier organisation id: products it has an active offer on."},
    )
    kind = fields.String(
        load_default=None, validate=validate.OneOf([k.value for k in CategoryKind])
    )
    phb_eligible = fields.Boolean(
        load_default=None,
        metadata={"description": "true: only what a personal health budget may buy."},
    )
    in_stock = fields.Boolean(
        load_default=None,
        metadata={"description": "true: only products with an active offer in stock."},
    )
    min_unit_price = QueryUnitPrice(
        load_default=None,
        metadata={"description": "Lowest best unit price, pence per base unit (inclusive)."},
    )
    max_unit_price = QueryUnitPrice(
        load_default=None,
        metadata={"description": "Highest best unit price, pence per base unit (inclusive)."},
    )
    sort = fields.String(load_default="relevance", validate=validate.OneOf(SORTS))
    limit = QueryInteger(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = fields.String(load_default=None, validate=validate.Length(max=512))

    @validates_schema
    def _price_range(self, data: dict[str, Any], **_kwargs: Any) -> None:
        low, high = data.get("min_unit_price"), data.get("max_unit_price")
        if low is not None and high is not None and low > high:
            raise ma.ValidationError(
                "Must not be below min_unit_price.", field_name="max_unit_price"
            )


class SupplierRefSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    is_sme = fields.Boolean()


class BestOfferSchema(ma.Schema):
    id = fields.String()
    supplier = fields.Nested(SupplierRefSchema)
    pack_price_pence = Pence()
    unit_price_pence = UnitPrice(metadata={"description": "Pence per base unit (4 places)."})
    in_stock = fields.Boolean()


class CategoryRefSchema(ma.Schema):
    code = fields.String()
    name = fields.String()


class PriceRangeSchema(ma.Schema):
    min_pence = UnitPrice(metadata={"description": "Lowest unit price of the active offers."})
    max_pence = UnitPrice(metadata={"description": "Highest unit price of the active offers."})


class SearchItemSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    gtin = fields.String(allow_none=True)
    manufacturer_part_number = fields.String(allow_none=True)
    category = fields.Nested(CategoryRefSchema)
    kind = fields.String()
    phb_eligible = fields.Boolean()
    unit_of_measure = fields.String()
    units_per_pack = fields.Integer()
    in_stock = fields.Boolean()
    offer_count = fields.Integer(metadata={"description": "Active offers on the product."})
    best_offer = fields.Nested(
        BestOfferSchema, metadata={"description": "The active offer with the lowest unit price."}
    )
    unit_price_range = fields.Nested(PriceRangeSchema)


class CategoryFacetSchema(ma.Schema):
    code = fields.String()
    name = fields.String()
    parent_code = fields.String(allow_none=True)
    count = fields.Integer(metadata={"description": "Matching products in it or below it."})


class SupplierFacetSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    is_sme = fields.Boolean()
    count = fields.Integer()


class ValueFacetSchema(ma.Schema):
    value = fields.String()
    count = fields.Integer()


class PriceFacetSchema(ma.Schema):
    key = fields.String()
    min_pence = UnitPrice(
        allow_none=True, metadata={"description": "Inclusive; null: no lower bound."}
    )
    max_pence = UnitPrice(
        allow_none=True, metadata={"description": "Exclusive; null: no upper bound."}
    )
    count = fields.Integer()


class FacetsSchema(ma.Schema):
    category = fields.List(fields.Nested(CategoryFacetSchema))
    supplier = fields.List(fields.Nested(SupplierFacetSchema))
    kind = fields.List(fields.Nested(ValueFacetSchema))
    unit_price = fields.List(fields.Nested(PriceFacetSchema))


class SearchResultSchema(CompiledDump, ma.Schema):
    items = fields.List(fields.Nested(SearchItemSchema), required=True)
    facets = fields.Nested(
        FacetsSchema,
        metadata={"description": "Counts for each facet, applying every other active filter."},
    )
    total = fields.Integer(metadata={"description": "Products matching the query and filters."})
    next_cursor = fields.String(
        allow_none=True,
        metadata={"description": "Pass as `cursor` for the next page; null on the last page."},
    )
