"""The catalogue's API contract: categories, products, offers, price history, bulk listing."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import marshmallow as ma
from marshmallow import fields, validate

from ..schemas import PageArgs, Pence, RowErrorSchema, StrictInteger, UnitPrice
from .models import CategoryKind, OfferStatus
from .service import VAT_RATES, vat_rate


class VatRate(fields.Field):
    """A UK VAT rate in percent: 0, 5 or 20 (a JSON number; Decimal inside)."""

    def _serialize(self, value: Decimal | None, attr: str | None, obj: Any, **kwargs: Any):
        if value is None:
            return None
        return int(value) if value == value.to_integral_value() else float(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        rate = vat_rate(value) if isinstance(value, int | float) else None
        if rate is None:
            raise ma.ValidationError("Must be 0, 5 or 20 (UK VAT rates, in percent).")
        return rate


VAT_METADATA = {
    "type": "number",
    "enum": [int(r) for r in VAT_RATES],
    "description": "VAT rate in percent.",
}


class CategorySchema(ma.Schema):
    id = fields.String()
    code = fields.String()
    name = fields.String()
    kind = fields.Enum(CategoryKind, by_value=True)
    phb_eligible = fields.Boolean()
    phb_excluded = fields.Boolean(
        metadata={"description": "Never purchasable with a personal health budget."}
    )
    scheme = fields.String(metadata={"description": "CPV, EMDN or MKT (the marketplace's own)."})
    scheme_code = fields.String(allow_none=True)
    children = fields.List(fields.Nested(lambda: CategorySchema()))


class CategoryTreeSchema(ma.Schema):
    items = fields.List(fields.Nested(CategorySchema), metadata={"description": "Root categories."})


class CategoryRefSchema(ma.Schema):
    code = fields.String()
    name = fields.String()
    kind = fields.Enum(CategoryKind, by_value=True)


class PriceBreakSchema(ma.Schema):
    min_qty = StrictInteger(required=True, validate=validate.Range(min=2, max=10**9))
    pack_price_pence = Pence(required=True, validate=validate.Range(min=1, max=10**9))


class PriceBreakOutSchema(PriceBreakSchema):
    unit_price_pence = UnitPrice(attribute="unit_price")


class SupplierRefSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    is_sme = fields.Boolean()


class OfferSchema(ma.Schema):
    """An offer as shown to anyone who may see it."""

    id = fields.String()
    product_id = fields.String()
    supplier = fields.Nested(SupplierRefSchema)
    supplier_sku = fields.String(allow_none=True)
    pack_price_pence = Pence(metadata={"description": "Pack price, ex-VAT, integer pence."})
    unit_price_pence = UnitPrice(
        attribute="unit_price",
        metadata={"description": "Pence per base unit (pack price / units per pack)."},
    )
    units_per_pack = fields.Function(lambda offer: offer.product.units_per_pack)
    vat_rate_percent = VatRate(metadata=VAT_METADATA)
    stock = StrictInteger()
    lead_time_days = StrictInteger()
    min_order_qty = StrictInteger()
    price_breaks = fields.List(
        fields.Nested(PriceBreakOutSchema),
        attribute="priced_breaks",
        metadata={"description": "Volume price breaks: min_qty packs or more → this pack price."},
    )
    status = fields.Enum(OfferStatus, by_value=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class OfferCreateSchema(ma.Schema):
    product_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    supplier_id = fields.String(
        load_default=None,
        validate=validate.Length(max=40),
        metadata={"description": "Operators only: the supplier the offer is for."},
    )
    supplier_sku = fields.String(
        allow_none=True, load_default=None, validate=validate.Length(max=100)
    )
    pack_price_pence = Pence(required=True, validate=validate.Range(min=1, max=10**9))
    vat_rate_percent = VatRate(required=True, metadata=VAT_METADATA)
    stock = StrictInteger(load_default=0, validate=validate.Range(min=0, max=10**9))
    lead_time_days = StrictInteger(load_default=0, validate=validate.Range(min=0, max=3650))
    min_order_qty = StrictInteger(load_default=1, validate=validate.Range(min=1, max=10**9))
    price_breaks = fields.List(fields.Nested(PriceBreakSchema), load_default=list)
    status = fields.Enum(OfferStatus, by_value=True, load_default=OfferStatus.ACTIVE)


class OfferUpdateSchema(ma.Schema):
    supplier_sku = fields.String(allow_none=True, validate=validate.Length(max=100))
    pack_price_pence = Pence(validate=validate.Range(min=1, max=10**9))
    vat_rate_percent = VatRate(metadata=VAT_METADATA)
    stock = StrictInteger(validate=validate.Range(min=0, max=10**9))
    lead_time_days = StrictInteger(validate=validate.Range(min=0, max=3650))
    min_order_qty = StrictInteger(validate=validate.Range(min=1, max=10**9))
    price_breaks = fields.List(fields.Nested(PriceBreakSchema))
    status = fields.Enum(OfferStatus, by_value=True)


class OfferListArgs(PageArgs):
    supplier_id = fields.String(load_default=None, validate=validate.Length(max=40))
    product_id = fields.String(load_default=None, validate=validate.Length(max=40))
    status = fields.Enum(OfferStatus, by_value=True, load_default=None)
    category = fields.String(
        load_default=None,
        validate=validate.Length(max=32),
        metadata={"description": "Category code; includes its descendants."},
    )
    supplier_sku = fields.String(load_default=None, validate=validate.Length(max=100))


class PriceHistorySchema(ma.Schema):
    id = fields.String()
    pack_price_pence = Pence()
    vat_rate_percent = VatRate(metadata=VAT_METADATA)
    price_breaks = fields.List(fields.Nested(PriceBreakSchema))
    effective_from = fields.AwareDateTime()
    # Who changed it (a supplier's user) stays in the audit log: the history is public.


class ProductFieldsSchema(ma.Schema):
    """The fields a product is created and changed with."""

    gtin = fields.String(
        allow_none=True,
        validate=validate.Length(max=20),
        metadata={"description": "GTIN-8, -12, -13 or -14 with a valid GS1 check digit."},
    )
    name = fields.String(validate=validate.Length(min=1, max=300))
    description = fields.String(allow_none=True, validate=validate.Length(max=5000))
    manufacturer = fields.String(allow_none=True, validate=validate.Length(max=200))
    brand = fields.String(allow_none=True, validate=validate.Length(max=200))
    manufacturer_part_number = fields.String(allow_none=True, validate=validate.Length(max=100))
    category_code = fields.String(validate=validate.Length(min=1, max=32))
    unit_of_measure = fields.String(
        validate=validate.Length(min=1, max=3),
        metadata={"description": "UN/CEFACT Recommendation 20 code, e.g. EA, PR, H87, BX."},
    )
    units_per_pack = StrictInteger(validate=validate.Range(min=1, max=1_000_000))
    attributes = fields.Dict(
        keys=fields.String(), metadata={"description": "Free key/values: size, length, class..."}
    )
    assurance = fields.Dict(
        keys=fields.String(),
        metadata={
            "description": "dtac_passed (bool), dtac_assessed_on (date), nice_evidence_tier "
            "(A/B/C), ukca_ce_marking (list of UKCA/UKNI/CE), mhra_device_class (I/IIa/IIb/III), "
            "dspt_compliant (bool)."
        },
    )


class ProductCreateSchema(ProductFieldsSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=300))
    category_code = fields.String(required=True, validate=validate.Length(min=1, max=32))
    unit_of_measure = fields.String(load_default="EA", validate=validate.Length(min=1, max=3))
    units_per_pack = StrictInteger(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    supplier_id = fields.String(
        load_default=None,
        validate=validate.Length(max=40),
        metadata={"description": "Operators only: the supplier the product is listed for."},
    )


class ProductUpdateSchema(ProductFieldsSchema):
    benchmark_excluded = fields.Boolean(
        metadata={"description": "Operators only: leave the product out of price benchmarks."}
    )
    benchmark_excluded_reason = fields.String(allow_none=True, validate=validate.Length(max=500))


class ProductSchema(ma.Schema):
    id = fields.String()
    gtin = fields.String(allow_none=True)
    name = fields.String()
    description = fields.String(allow_none=True)
    manufacturer = fields.String(allow_none=True)
    brand = fields.String(allow_none=True)
    manufacturer_part_number = fields.String(allow_none=True)
    category = fields.Nested(CategoryRefSchema)
    unit_of_measure = fields.String()
    units_per_pack = StrictInteger()
    attributes = fields.Dict()
    assurance = fields.Dict()
    benchmark_excluded = fields.Boolean()
    benchmark_excluded_reason = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class ProductSummarySchema(ProductSchema):
    offer_count = StrictInteger(metadata={"description": "Active offers."})
    lowest_pack_price_pence = Pence(allow_none=True)
    lowest_unit_price_pence = UnitPrice(allow_none=True)


class ProductDetailSchema(ProductSchema):
    offers = fields.List(
        fields.Nested(OfferSchema),
        metadata={"description": "Active offers, cheapest unit price first."},
    )


class ProductListArgs(PageArgs):
    category = fields.String(
        load_default=None,
        validate=validate.Length(max=32),
        metadata={"description": "Category code; includes its descendants."},
    )
    supplier_id = fields.String(
        load_default=None,
        validate=validate.Length(max=40),
        metadata={"description": "Products this supplier has an active offer on."},
    )
    kind = fields.Enum(CategoryKind, by_value=True, load_default=None)
    gtin = fields.String(load_default=None, validate=validate.Regexp(r"^[0-9]{8,14}$"))


class ImportArgs(ma.Schema):
    dry_run = fields.Boolean(load_default=False)
    supplier_id = fields.String(
        load_default=None,
        validate=validate.Length(max=40),
        metadata={"description": "Operators only: the supplier whose price list this is."},
    )


class ImportReportSchema(ma.Schema):
    supplier_id = fields.String()
    dry_run = fields.Boolean()
    rows = fields.Integer()
    created_products = fields.Integer()
    created_offers = fields.Integer()
    updated_offers = fields.Integer()
    unchanged = fields.Integer()
    rejected = fields.Integer()
    errors = fields.List(fields.Nested(RowErrorSchema))
