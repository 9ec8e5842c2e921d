from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..accounts.models import Organisation, enum_column
from ..db import Base, PublicIdMixin, TimestampMixin, utcnow
from ..money import unit_price

JSONType = JSON().with_variant(JSONB(), "postgresql")


class CategoryKind(enum.StrEnum):
    COMMODITY = "commodity"
    DEVICE = "device"
    DIGITAL_TOOL = "digital_tool"
    SERVICE = "service"


class OfferStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class Category(PublicIdMixin, Base):
    """A node of the category tree. ``path`` is the materialised path of codes
    (``/33000000/33140000/33141110/``) so that "this category and its descendants" is one
    indexed prefix match."""

    __tablename__ = "categories"
    id_prefix = "cat"

    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    scheme: Mapped[str] = mapped_column(String(16))  # CPV, EMDN, or MKT (the marketplace's own)
    scheme_code: Mapped[str | None] = mapped_column(
        String(32)
    )  # e.g. the CPV code with check digit
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("categories.id"), index=True)
    path: Mapped[str] = mapped_column(String(512), index=True)
    kind: Mapped[CategoryKind] = mapped_column(enum_column(CategoryKind, "category_kind"))
    phb_eligible: Mapped[bool] = mapped_column(Boolean, default=False)
    phb_excluded: Mapped[bool] = mapped_column(Boolean, default=False)

    parent: Mapped[Category | None] = relationship(remote_side="Category.id")


class Product(PublicIdMixin, TimestampMixin, Base):
    """One real thing, identified by its GTIN when it has one. Suppliers list offers on it."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("units_per_pack > 0", name="units_per_pack_positive"),
        Index("ix_products_mpn", "manufacturer_part_number"),
        Index("ix_products_name_id", "name", "id"),  # the public list's keyset order
    )
    id_prefix = "prd"

    gtin: Mapped[str | None] = mapped_column(String(14), unique=True)  # normalised to 14 digits
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str | None] = mapped_column(Text)
    manufacturer: Mapped[str | None] = mapped_column(String(200))
    brand: Mapped[str | None] = mapped_column(String(200))
    manufacturer_part_number: Mapped[str | None] = mapped_column(String(100))
    category_id: Mapped[str] = mapped_column(ForeignKey("categories.id"), index=True)
    unit_of_measure: Mapped[str] = mapped_column(String(3), default="EA")  # UN/CEFACT Rec 20
    units_per_pack: Mapped[int] = mapped_column(Integer, default=1)
    attributes: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Digital tools and devices: DTAC passed, NICE evidence tier, UKCA/CE marking...
    assurance: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # Operators may exclude specials/one-off items from price benchmarking (DESIGN §6).
    benchmark_excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    benchmark_excluded_reason: Mapped[str | None] = mapped_column(String(500))
    created_by_supplier_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))

    category: Mapped[Category] = relationship(lazy="joined")
    offers: Mapped[list[Offer]] = relationship(back_populates="product")


class Offer(PublicIdMixin, TimestampMixin, Base):
    """A supplier's listing of a product. Prices are ex-VAT pack prices in pence; every change
    is kept in ``offer_price_history``."""

    __tablename__ = "offers"
    __table_args__ = (
        UniqueConstraint("supplier_id", "product_id"),
        UniqueConstraint("supplier_id", "supplier_sku"),
        CheckConstraint("pack_price_pence > 0", name="pack_price_positive"),
        CheckConstraint("stock >= 0", name="stock_not_negative"),
        CheckConstraint("min_order_qty >= 1", name="min_order_qty_positive"),
        CheckConstraint("lead_time_days >= 0", name="lead_time_not_negative"),
        Index("ix_offers_product_status", "product_id", "status"),
    )
    id_prefix = "off"

    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    supplier_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    supplier_sku: Mapped[str | None] = mapped_column(String(100))
    pack_price_pence: Mapped[int] = mapped_column(Integer)
    vat_rate_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2), default=Decimal("20"))
    stock: Mapped[int] = mapped_column(Integer, default=0)
    lead_time_days: Mapped[int] = mapped_column(Integer, default=0)
    min_order_qty: Mapped[int] = mapped_column(Integer, default=1)
    # Volume price breaks: [{"min_qty": 10, "pack_price_pence": 950}, ...], ascending min_qty,
    # non-increasing prices, all below the base pack price.
    price_breaks: Mapped[list[dict[str, int]]] = mapped_column(JSONType, default=list)
    status: Mapped[OfferStatus] = mapped_column(
        enum_column(OfferStatus, "offer_status"), default=OfferStatus.ACTIVE
    )

    product: Mapped[Product] = relationship(back_populates="offers", lazy="joined")
    supplier: Mapped[Organisation] = relationship(lazy="joined")

    @property
    def unit_price(self) -> Decimal:
        """Exact pence per base unit at the base pack price."""
        return unit_price(self.pack_price_pence, self.product.units_per_pack)

    @property
    def priced_breaks(self) -> list[dict[str, Any]]:
        """The price breaks, each with its exact unit price."""
        units = self.product.units_per_pack
        return [
            {**item, "unit_price": unit_price(item["pack_price_pence"], units)}
            for item in self.price_breaks or []
        ]


class OfferPriceHistory(PublicIdMixin, Base):
    """One row per price an offer has had; the latest row is the current price."""

    __tablename__ = "offer_price_history"
    __table_args__ = (Index("ix_offer_price_history_offer_time", "offer_id", "effective_from"),)
    id_prefix = "oph"

    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"))
    pack_price_pence: Mapped[int] = mapped_column(Integer)
    vat_rate_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    price_breaks: Mapped[list[dict[str, int]]] = mapped_column(JSONType, default=list)
    effective_from: Mapped[datetime] = mapped_column(default=utcnow)
    changed_by: Mapped[str] = mapped_column(String(254))
