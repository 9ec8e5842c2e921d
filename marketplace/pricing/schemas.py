"""The pricing API contract. Per-unit prices (pence per base unit) are ``UnitPrice``: JSON
numbers rounded once, half to even, to 4 decimal places; ratios likewise; money is integer
pence."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import marshmallow as ma
from marshmallow import fields, validate

from ..schemas import PageArgs, Pence, QueryInteger, RowErrorSchema, UnitPrice
from . import method as m
from .models import PackSizeSource, PurchaseSource, PurchaseStatus

EARLIEST = date(2000, 1, 1)
LATEST = date(2999, 12, 31)
# A purchase line costs at most 10**12 pence for at least one unit (importer limits), so no
# trust ever paid more per unit than this; a dearer price to check is surely a typing error.
MAX_CHECK_UNIT_PRICE = Decimal(10**12)


class Ratio(UnitPrice):
    """A derived ratio (spread, IQR/median), rounded to 4 decimal places."""


_FORMAT = fields.String(
    load_default=None,
    validate=validate.OneOf(["json", "csv"]),
    metadata={"description": "`csv` answers text/csv (as does `Accept: text/csv`)."},
)


class MethodArgs(ma.Schema):
    date_from = fields.Date(
        data_key="from",
        load_default=None,
        validate=validate.Range(min=EARLIEST, max=LATEST),
        metadata={"description": "First order date of the window (default: 364 days before `to`)."},
    )
    date_to = fields.Date(
        data_key="to",
        load_default=None,
        validate=validate.Range(min=EARLIEST, max=LATEST),
        metadata={"description": "Last order date of the window (default: today, UTC)."},
    )
    benchmark = fields.String(
        load_default=m.DEFAULT_BENCHMARK,
        validate=validate.OneOf(list(m.BENCHMARKS)),
        metadata={"description": "Centile of the per-trust unit prices used as the benchmark."},
    )
    min_trusts = QueryInteger(
        load_default=m.DEFAULT_MIN_TRUSTS,
        validate=validate.Range(min=2, max=10_000),
        metadata={
            "description": "A product is reported only when at least this many trusts bought it."
        },
    )
    outlier_threshold_percent = QueryInteger(
        load_default=int(m.DEFAULT_OUTLIER_THRESHOLD * 100),
        validate=validate.Range(min=0, max=1000),
        metadata={"description": "Trusts paying more than median x (1 + this/100) are outliers."},
    )
    min_savings_pence = QueryInteger(
        load_default=m.DEFAULT_MIN_SAVINGS_PENCE,
        validate=validate.Range(min=0, max=10**12),
        metadata={
            "description": "Savings below this, per trust per product, are left out of totals."
        },
    )
    format = _FORMAT


class RankingArgs(MethodArgs, PageArgs):
    sort = fields.String(load_default="savings", validate=validate.OneOf(["savings", "spread"]))
    category = fields.String(
        load_default=None,
        validate=validate.Length(max=32),
        metadata={"description": "Category code; its descendants are included."},
    )


class TrustSavingsArgs(MethodArgs, PageArgs):
    pass


class PriceCheckArgs(ma.Schema):
    product = fields.String(required=True, validate=validate.Length(min=1, max=40))
    unit_price = UnitPrice(
        required=True,
        validate=validate.Range(
            max=MAX_CHECK_UNIT_PRICE,
            error=f"Must be at most {int(MAX_CHECK_UNIT_PRICE):,} pence per unit.",
        ),
        metadata={
            "description": "The price to check, in pence per base unit (at most "
            f"{int(MAX_CHECK_UNIT_PRICE):,}: the most an importable line can cost per unit).",
        },
    )
    date_from = MethodArgs._declared_fields["date_from"]
    date_to = MethodArgs._declared_fields["date_to"]
    benchmark = MethodArgs._declared_fields["benchmark"]
    min_trusts = MethodArgs._declared_fields["min_trusts"]
    outlier_threshold_percent = MethodArgs._declared_fields["outlier_threshold_percent"]
    format = _FORMAT


class ChartArgs(ma.Schema):
    highlight = fields.String(
        load_default=None,
        validate=validate.Length(max=12),
        metadata={"description": "ODS code of the trust to mark."},
    )
    date_from = MethodArgs._declared_fields["date_from"]
    date_to = MethodArgs._declared_fields["date_to"]
    benchmark = MethodArgs._declared_fields["benchmark"]
    min_trusts = MethodArgs._declared_fields["min_trusts"]


class WindowSchema(ma.Schema):
    date_from = fields.Date(data_key="from", attribute="start")
    date_to = fields.Date(data_key="to", attribute="end")


class MethodSchema(ma.Schema):
    benchmark = fields.String()
    min_trusts = fields.Integer()
    outlier_threshold_percent = fields.Integer()
    min_savings_pence = Pence()


class DistributionSchema(ma.Schema):
    n_trusts = fields.Integer()
    min_pence = UnitPrice()
    p10_pence = UnitPrice()
    p25_pence = UnitPrice()
    median_pence = UnitPrice()
    p75_pence = UnitPrice()
    max_pence = UnitPrice()
    mean_pence = UnitPrice()
    benchmark_pence = UnitPrice(allow_none=True)
    spread = Ratio(metadata={"description": "max / min - 1."})
    iqr_over_median = Ratio()
    possible_savings_pence = Pence(
        metadata={"description": "Total of the trusts' possible savings that reach the minimum."}
    )


class TrustRowSchema(ma.Schema):
    ods_code = fields.String()
    trust_name = fields.String()
    unit_price_pence = UnitPrice()
    units = fields.Integer()
    spend_pence = Pence()
    possible_savings_pence = Pence()
    counted_in_totals = fields.Boolean()
    outlier = fields.Boolean()


class ProductRefSchema(ma.Schema):
    id = fields.String()
    name = fields.String()
    category_id = fields.String()
    benchmark_excluded = fields.Boolean()
    benchmark_excluded_reason = fields.String(allow_none=True)


class ProductVarianceSchema(ma.Schema):
    product = fields.Nested(ProductRefSchema)
    window = fields.Nested(WindowSchema)
    method = fields.Nested(MethodSchema)
    reported = fields.Boolean()
    reason = fields.String(
        allow_none=True,
        metadata={
            "description": "Why it is not reported: too_few_trusts or excluded_from_benchmarking."
        },
    )
    n_trusts = fields.Integer()
    distribution = fields.Nested(DistributionSchema, allow_none=True)
    trusts = fields.List(fields.Nested(TrustRowSchema))


class RankingItemSchema(DistributionSchema):
    product_id = fields.String()
    product_name = fields.String()
    category_id = fields.String()
    outliers = fields.Integer()
    units = fields.Integer()
    spend_pence = Pence()


class TotalsSchema(ma.Schema):
    products = fields.Integer()
    possible_savings_pence = Pence()


class RankingSchema(ma.Schema):
    window = fields.Nested(WindowSchema)
    method = fields.Nested(MethodSchema)
    sort = fields.String()
    totals = fields.Nested(TotalsSchema)
    items = fields.List(fields.Nested(RankingItemSchema))
    next_cursor = fields.String(allow_none=True)


class OfferRefSchema(ma.Schema):
    offer_id = fields.String()
    supplier_id = fields.String()
    pack_price_pence = Pence()
    units_per_pack = fields.Integer()
    unit_price_pence = UnitPrice()


class TrustSavingsItemSchema(ma.Schema):
    product_id = fields.String()
    product_name = fields.String()
    unit_price_pence = UnitPrice()
    units = fields.Integer()
    spend_pence = Pence()
    n_trusts = fields.Integer()
    benchmark_pence = UnitPrice()
    median_pence = UnitPrice()
    possible_savings_pence = Pence()
    outlier = fields.Boolean()
    cheapest_offer = fields.Nested(OfferRefSchema, allow_none=True)


class TrustRefSchema(ma.Schema):
    ods_code = fields.String()
    name = fields.String()


class TrustSavingsSchema(ma.Schema):
    trust = fields.Nested(TrustRefSchema)
    window = fields.Nested(WindowSchema)
    method = fields.Nested(MethodSchema)
    total_products = fields.Integer()
    total_possible_savings_pence = Pence()
    items = fields.List(fields.Nested(TrustSavingsItemSchema))
    next_cursor = fields.String(allow_none=True)


class PriceCheckSchema(ma.Schema):
    product_id = fields.String()
    unit_price_pence = UnitPrice()
    window = fields.Nested(WindowSchema)
    method = fields.Nested(MethodSchema)
    n_trusts = fields.Integer()
    percentile = Ratio(
        allow_none=True,
        metadata={"description": "Share of trusts paying less (ties count half), 0-100."},
    )
    benchmark_pence = UnitPrice(allow_none=True)
    median_pence = UnitPrice(allow_none=True)
    verdict = fields.String(
        allow_none=True,
        metadata={
            "description": "below_benchmark, typical, above_median or outlier (null when not reported)."
        },
    )
    reason = fields.String(allow_none=True)
    cheaper_offer = fields.Nested(OfferRefSchema, allow_none=True)


# --- purchase records -------------------------------------------------------------------------


class PurchaseSchema(ma.Schema):
    id = fields.String()
    trust_ods = fields.String()
    order_date = fields.Date()
    product_id = fields.String(allow_none=True)
    supplier_id = fields.String(allow_none=True)
    supplier_name = fields.String(allow_none=True)
    supplier_sku = fields.String(allow_none=True)
    gtin = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    quantity = fields.Integer(metadata={"description": "Packs."})
    units_per_pack = fields.Integer(
        allow_none=True,
        metadata={
            "description": "Base units per pack of this line (null while the line gave none "
            "and is not matched)."
        },
    )
    units_per_pack_source = fields.Enum(
        PackSizeSource,
        by_value=True,
        allow_none=True,
        metadata={
            "description": "Where units_per_pack came from: given (by the line itself: the "
            "trust's file, or the marketplace order), kept whatever product the line is "
            "matched to; catalogue (the file left it blank: the matched product's), which a "
            "re-match to another product replaces with that product's. Null while units_per_pack is."
        },
    )
    total_price_pence = Pence()
    unit_price_pence = UnitPrice(allow_none=True, attribute="unit_price")
    source = fields.Enum(PurchaseSource, by_value=True)
    po_number = fields.String()
    line = fields.Integer()
    status = fields.Enum(PurchaseStatus, by_value=True)
    benchmark_excluded = fields.Boolean()
    benchmark_excluded_reason = fields.String(allow_none=True)
    import_id = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()


class PurchaseListArgs(PageArgs):
    status = fields.Enum(PurchaseStatus, by_value=True, load_default=None)
    trust = fields.String(
        load_default=None,
        validate=validate.Length(max=12),
        metadata={"description": "ODS code (operators; a buyer sees only their own trust)."},
    )
    product_id = fields.String(load_default=None, validate=validate.Length(max=40))
    excluded = fields.Boolean(load_default=None)


class ImportArgs(ma.Schema):
    trust = fields.String(
        load_default=None,
        validate=validate.Length(max=12),
        metadata={"description": "ODS code: operators only; a buyer imports for their own trust."},
    )


class ImportResultSchema(ma.Schema):
    import_id = fields.String()
    trust_ods = fields.String()
    rows = fields.Integer()
    imported = fields.Integer()
    matched = fields.Integer()
    unmatched = fields.Integer()
    already_imported = fields.Integer()
    rejected = fields.Integer()
    errors = fields.List(fields.Nested(RowErrorSchema))
    errors_truncated = fields.Boolean()


class MatchSchema(ma.Schema):
    product_id = fields.String(required=True, validate=validate.Length(min=1, max=40))


class ExclusionSchema(ma.Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
