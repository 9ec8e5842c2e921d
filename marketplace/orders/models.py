from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, Numeric, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..accounts.models import enum_column
from ..db import Base, PublicIdMixin, TimestampMixin, utcnow

JSONType = JSON().with_variant(JSONB(), "postgresql")


class PaymentMethod(enum.StrEnum):
    PURCHASE_ORDER = "purchase_order"
    BUDGET = "budget"
    CARD = "card"


class OrderStatus(enum.StrEnum):
    """The order as a whole; each supplier order carries its own lifecycle."""

    PENDING_APPROVAL = "pending_approval"
    PLACED = "placed"
    REJECTED = "rejected"
    CANCELLED = "cancelled"
    COMPLETED = "completed"


class SupplierOrderStatus(enum.StrEnum):
    PENDING_APPROVAL = "pending_approval"
    PLACED = "placed"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"


class CardPaymentStatus(enum.StrEnum):
    AUTHORISED = "authorised"
    CAPTURED = "captured"
    CANCELED = "canceled"
    FAILED = "failed"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class Quote(PublicIdMixin, Base):
    """A priced basket. Prices are locked for the quote's life; one order at most comes of it."""

    __tablename__ = "quotes"
    id_prefix = "quo"

    created_by: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    payment_method: Mapped[PaymentMethod] = mapped_column(
        enum_column(PaymentMethod, "payment_method")
    )
    budget_id: Mapped[str | None] = mapped_column(String(40), index=True)
    card_top_up: Mapped[bool] = mapped_column(default=False)
    net_pence: Mapped[int] = mapped_column(Integer)
    vat_pence: Mapped[int] = mapped_column(Integer)
    gross_pence: Mapped[int] = mapped_column(Integer)
    budget_pence: Mapped[int] = mapped_column(Integer, default=0)
    card_pence: Mapped[int] = mapped_column(Integer, default=0)
    budget_check: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    orderable: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

    lines: Mapped[list[QuoteLine]] = relationship(
        order_by="QuoteLine.position", cascade="all, delete-orphan", lazy="selectin"
    )


class QuoteLine(PublicIdMixin, Base):
    __tablename__ = "quote_lines"
    id_prefix = "qln"

    quote_id: Mapped[str] = mapped_column(ForeignKey("quotes.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"))
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"))
    supplier_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    units_per_pack: Mapped[int] = mapped_column(Integer)
    pack_price_pence: Mapped[int] = mapped_column(Integer)
    unit_price_pence: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    vat_rate_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    net_pence: Mapped[int] = mapped_column(Integer)
    vat_pence: Mapped[int] = mapped_column(Integer)
    gross_pence: Mapped[int] = mapped_column(Integer)
    lead_time_days: Mapped[int] = mapped_column(Integer)
    price_verdict: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    cheaper_offer: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    budget_check: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    problems: Mapped[list[dict[str, str]]] = mapped_column(JSONType, default=list)


class Order(PublicIdMixin, TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (Index("ix_orders_org_created", "organisation_id", "created_at"),)
    id_prefix = "ord"

    quote_id: Mapped[str] = mapped_column(ForeignKey("quotes.id"), unique=True)
    organisation_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    placed_by: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    payment_method: Mapped[PaymentMethod] = mapped_column(
        enum_column(PaymentMethod, "payment_method")
    )
    budget_id: Mapped[str | None] = mapped_column(String(40), index=True)
    approval_id: Mapped[str | None] = mapped_column(String(40))
    po_number: Mapped[str | None] = mapped_column(String(64))
    delivery_address: Mapped[dict[str, Any]] = mapped_column(JSONType)
    status: Mapped[OrderStatus] = mapped_column(enum_column(OrderStatus, "order_status"))
    net_pence: Mapped[int] = mapped_column(Integer)
    vat_pence: Mapped[int] = mapped_column(Integer)
    gross_pence: Mapped[int] = mapped_column(Integer)
    budget_pence: Mapped[int] = mapped_column(Integer, default=0)
    card_pence: Mapped[int] = mapped_column(Integer, default=0)

    supplier_orders: Mapped[list[SupplierOrder]] = relationship(
        back_populates="order", order_by="SupplierOrder.id", lazy="selectin"
    )


class SupplierOrder(PublicIdMixin, TimestampMixin, Base):
    """The part of an order that one supplier fulfils, with its own state machine and money."""

    __tablename__ = "supplier_orders"
    __table_args__ = (Index("ix_supplier_orders_supplier_created", "supplier_id", "created_at"),)
    id_prefix = "sor"

    order_id: Mapped[str] = mapped_column(ForeignKey("orders.id"), index=True)
    supplier_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    status: Mapped[SupplierOrderStatus] = mapped_column(
        enum_column(SupplierOrderStatus, "supplier_order_status")
    )
    net_pence: Mapped[int] = mapped_column(Integer)
    vat_pence: Mapped[int] = mapped_column(Integer)
    gross_pence: Mapped[int] = mapped_column(Integer)
    budget_pence: Mapped[int] = mapped_column(Integer, default=0)
    card_pence: Mapped[int] = mapped_column(Integer, default=0)
    refunded_pence: Mapped[int] = mapped_column(Integer, default=0)
    # The budget ledger entries behind this supplier order's budget part:
    # [{"hold_id", "amount_pence", "capture_id"?, "refunded_pence"?}, ...]
    budget_holds: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    status_reason: Mapped[str | None] = mapped_column(String(500))
    dispatched_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]

    order: Mapped[Order] = relationship(back_populates="supplier_orders", lazy="joined")
    lines: Mapped[list[OrderLine]] = relationship(order_by="OrderLine.position", lazy="selectin")
    card_payment: Mapped[CardPayment | None] = relationship(lazy="selectin", uselist=False)


class OrderLine(PublicIdMixin, Base):
    __tablename__ = "order_lines"
    id_prefix = "oln"

    supplier_order_id: Mapped[str] = mapped_column(ForeignKey("supplier_orders.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    offer_id: Mapped[str] = mapped_column(ForeignKey("offers.id"))
    product_id: Mapped[str] = mapped_column(ForeignKey("products.id"), index=True)
    quantity: Mapped[int] = mapped_column(Integer)
    units_per_pack: Mapped[int] = mapped_column(Integer)
    pack_price_pence: Mapped[int] = mapped_column(Integer)
    unit_price_pence: Mapped[Decimal] = mapped_column(Numeric(18, 6))
    vat_rate_percent: Mapped[Decimal] = mapped_column(Numeric(5, 2))
    net_pence: Mapped[int] = mapped_column(Integer)
    vat_pence: Mapped[int] = mapped_column(Integer)
    gross_pence: Mapped[int] = mapped_column(Integer)


class CardPayment(PublicIdMixin, TimestampMixin, Base):
    """One Stripe PaymentIntent (manual capture) for one supplier order's card part."""

    __tablename__ = "card_payments"
    id_prefix = "pay"

    supplier_order_id: Mapped[str] = mapped_column(ForeignKey("supplier_orders.id"), unique=True)
    reference: Mapped[str] = mapped_column(String(100), unique=True)
    payment_intent_id: Mapped[str] = mapped_column(String(100), unique=True)
    amount_pence: Mapped[int] = mapped_column(Integer)
    captured_pence: Mapped[int] = mapped_column(Integer, default=0)
    refunded_pence: Mapped[int] = mapped_column(Integer, default=0)
    refund_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[CardPaymentStatus] = mapped_column(
        enum_column(CardPaymentStatus, "card_payment_status")
    )


class StripeEvent(Base):
    """Every webhook event, recorded once: a replay or duplicate changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payment_intent_id: Mapped[str | None] = mapped_column(String(100), index=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(200))
