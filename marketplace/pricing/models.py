"""Purchase records (what trusts paid) and the materialised variance statistics.

Raw lines live in ``purchase_records``. Everything else here is derived from them and can be
rebuilt at any time by ``rollups.refresh_all`` (``marketplace pricing refresh``; the rollups
only with ``--rollups``):

- ``pricing_daily_totals`` / ``pricing_monthly_totals``: units, spend and line count per
  (product, trust, day) and per (product, trust, month) for matched, benchmarked lines, kept up
  to date by additive deltas in the same transaction as every change to a line;
- ``pricing_trust_window``: per (product, trust) units and spend for the default window
  (the last 365 days), kept up to date by the same deltas;
- ``pricing_product_stats``: each product's distribution for the default window, exact
  (``ExactDecimal``), with the totals the ranking sorts on;
- ``pricing_state``: which window the two caches describe.

Derived tables carry no foreign keys: they are caches, rebuilt from the raw lines.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..accounts.models import enum_column
from ..audit import JSONType
from ..db import Base, PublicIdMixin, TimestampMixin, utcnow


class ExactDecimal(TypeDecorator[Decimal]):
    """A Decimal stored as text, so that SQLite (whose NUMERIC is a float) keeps every digit."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class PurchaseSource(enum.StrEnum):
    IMPORT = "import"
    MARKETPLACE = "marketplace"


class PurchaseStatus(enum.StrEnum):
    MATCHED = "matched"
    UNMATCHED = "unmatched"


class PackSizeSource(enum.StrEnum):
    """Where a purchase line's ``units_per_pack`` came from."""

    GIVEN = "given"  # the line's own: the trust's file, or the marketplace order line
    CATALOGUE = "catalogue"  # the matched product's, the line giving none: follows a re-match


class PurchaseImport(PublicIdMixin, Base):
    """One import of a file of purchase lines: who, which trust, and its summary (the answer a
    retry with the same ``Idempotency-Key`` gets again)."""

    __tablename__ = "purchase_imports"
    __table_args__ = (UniqueConstraint("trust_id", "idempotency_key"),)
    id_prefix = "imp"

    trust_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    filename: Mapped[str | None] = mapped_column(String(255))
    file_format: Mapped[str] = mapped_column(String(8))
    actor_label: Mapped[str] = mapped_column(String(254))
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class PurchaseRecord(PublicIdMixin, TimestampMixin, Base):
    """One line of what a trust actually paid (DESIGN §3)."""

    __tablename__ = "purchase_records"
    __table_args__ = (
        UniqueConstraint("trust_id", "po_number", "line"),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint(
            "units_per_pack IS NULL OR units_per_pack > 0", name="units_per_pack_positive"
        ),
        CheckConstraint("total_price_pence > 0", name="total_price_positive"),
        CheckConstraint(
            "given_units_per_pack IS NULL "
            "OR (units_per_pack IS NOT NULL AND units_per_pack = given_units_per_pack)",
            name="given_units_per_pack_kept",
        ),
        CheckConstraint(
            "(status = 'matched') = (product_id IS NOT NULL AND units_per_pack IS NOT NULL)",
            name="matched_has_product",
        ),
        Index("ix_purchase_records_trust_status", "trust_id", "status", "created_at", "id"),
        Index("ix_purchase_records_status_created", "status", "created_at", "id"),
        Index("ix_purchase_records_product_id", "product_id"),
    )
    id_prefix = "pur"
    ordered_ids = True  # written by the million: each insert at the end of the primary key

    trust_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    order_date: Mapped[date] = mapped_column(Date)
    product_id: Mapped[str | None] = mapped_column(ForeignKey("products.id"))
    supplier_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    supplier_name: Mapped[str | None] = mapped_column(String(200))
    supplier_sku: Mapped[str | None] = mapped_column(String(100))
    gtin: Mapped[str | None] = mapped_column(String(14))
    description: Mapped[str | None] = mapped_column(String(500))
    quantity: Mapped[int] = mapped_column(Integer)  # packs
    units_per_pack: Mapped[int | None] = mapped_column(Integer)
    # The pack size the line itself gave (the trust's file, the marketplace order); None when
    # it gave none and ``units_per_pack`` is the matched product's (or unknown until matched).
    given_units_per_pack: Mapped[int | None] = mapped_column(Integer)
    total_price_pence: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[PurchaseSource] = mapped_column(enum_column(PurchaseSource, "purchase_source"))
    po_number: Mapped[str] = mapped_column(String(64))
    line: Mapped[int] = mapped_column(Integer)
    status: Mapped[PurchaseStatus] = mapped_column(enum_column(PurchaseStatus, "purchase_status"))
    benchmark_excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    benchmark_excluded_reason: Mapped[str | None] = mapped_column(String(500))
    import_id: Mapped[str | None] = mapped_column(ForeignKey("purchase_imports.id"))

    @property
    def units(self) -> int | None:
        """Base units bought: packs x units per pack (None until the pack size is known)."""
        return None if self.units_per_pack is None else self.quantity * self.units_per_pack

    @property
    def units_per_pack_source(self) -> PackSizeSource | None:
        """Given with the line, or the catalogue's (None while the pack size is unknown)."""
        if self.given_units_per_pack is not None:
            return PackSizeSource.GIVEN
        return None if self.units_per_pack is None else PackSizeSource.CATALOGUE

    @property
    def unit_price(self) -> Decimal | None:
        """Exact pence per base unit (total / (packs x units per pack))."""
        units = self.units
        return None if not units else Decimal(self.total_price_pence) / Decimal(units)

    @property
    def is_benchmarked(self) -> bool:
        return self.status == PurchaseStatus.MATCHED and not self.benchmark_excluded


class DailyTotal(Base):
    __tablename__ = "pricing_daily_totals"
    __table_args__ = (Index("ix_pricing_daily_totals_day", "day"),)

    product_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trust_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)
    spend_pence: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(Integer)


class MonthlyTotal(Base):
    __tablename__ = "pricing_monthly_totals"

    product_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trust_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    month: Mapped[date] = mapped_column(Date, primary_key=True)  # the first day of the month
    units: Mapped[int] = mapped_column(BigInteger)
    spend_pence: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[int] = mapped_column(Integer)


class TrustWindowTotal(Base):
    """Units and spend per (product, trust) over the default window (``PricingState``)."""

    __tablename__ = "pricing_trust_window"
    __table_args__ = (Index("ix_pricing_trust_window_trust_id", "trust_id"),)

    product_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    trust_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    units: Mapped[int] = mapped_column(BigInteger)
    spend_pence: Mapped[int] = mapped_column(BigInteger)


class ProductStats(Base):
    """One product's distribution over the default window, computed exactly from
    ``pricing_trust_window``. Per-unit prices are exact Decimals; savings are the published
    integer pence for the default method with each benchmark centile."""

    __tablename__ = "pricing_product_stats"
    __table_args__ = (
        Index("ix_pricing_product_stats_savings_p10", "savings_p10_pence", "product_id"),
        Index("ix_pricing_product_stats_savings_p25", "savings_p25_pence", "product_id"),
        Index("ix_pricing_product_stats_savings_median", "savings_median_pence", "product_id"),
        Index("ix_pricing_product_stats_spread", "spread_sort", "product_id"),
        Index("ix_pricing_product_stats_category_id", "category_id"),
    )

    product_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    product_name: Mapped[str] = mapped_column(String(300))
    category_id: Mapped[str | None] = mapped_column(String(40))
    benchmark_excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    benchmark_excluded_reason: Mapped[str | None] = mapped_column(String(500))
    n_trusts: Mapped[int] = mapped_column(Integer)
    units: Mapped[int] = mapped_column(BigInteger)
    spend_pence: Mapped[int] = mapped_column(BigInteger)
    min_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    p10_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    p25_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    median_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    p75_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    max_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    mean_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    spread: Mapped[Decimal] = mapped_column(ExactDecimal())
    spread_sort: Mapped[float] = mapped_column(Float)  # sort key only; ``spread`` is the value
    outliers: Mapped[int] = mapped_column(Integer)  # trusts above median x 1.2
    savings_p10_pence: Mapped[int] = mapped_column(BigInteger)
    savings_p25_pence: Mapped[int] = mapped_column(BigInteger)
    savings_median_pence: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class StatsTotal(Base):
    """Per category and number of trusts: how many benchmarked products, and their counted
    savings for each centile. The ranking's totals for ``min_trusts = k`` (and a category
    subtree) are a sum over a few rows of this table instead of over every product."""

    __tablename__ = "pricing_stats_totals"

    category_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    n_trusts: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    products: Mapped[int] = mapped_column(Integer)
    savings_p10_pence: Mapped[int] = mapped_column(BigInteger)
    savings_p25_pence: Mapped[int] = mapped_column(BigInteger)
    savings_median_pence: Mapped[int] = mapped_column(BigInteger)


class PricingState(Base):
    """A single row (id 1): the default window the caches describe, and when they were built."""

    __tablename__ = "pricing_state"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    window_from: Mapped[date] = mapped_column(Date)
    window_to: Mapped[date] = mapped_column(Date)
    full_refresh_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
