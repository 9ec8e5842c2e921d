from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from ..catalog.schemas import VAT_METADATA, VatRate
from ..schemas import PageArgs, Pence, StrictInteger, UnitPrice
from .models import OrderStatus, PaymentMethod, SupplierOrderStatus


class BasketLineSchema(ma.Schema):
    offer_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    quantity = StrictInteger(required=True, validate=validate.Range(min=1, max=1_000_000))


class QuoteRequestSchema(ma.Schema):
    lines = fields.List(
        fields.Nested(BasketLineSchema), required=True, validate=validate.Length(min=1, max=200)
    )
    payment_method = fields.Enum(PaymentMethod, by_value=True, required=True)
    budget_id = fields.String(load_default=None, validate=validate.Length(max=40))
    card_top_up = fields.Boolean(load_default=False)


class ProblemItemSchema(ma.Schema):
    code = fields.String()
    message = fields.String()


class QuoteLineSchema(ma.Schema):
    id = fields.String()
    position = fields.Integer()
    offer_id = fields.String()
    product_id = fields.String()
    supplier_id = fields.String()
    quantity = fields.Integer()
    units_per_pack = fields.Integer()
    pack_price_pence = Pence()
    unit_price_pence = UnitPrice()
    vat_rate_percent = VatRate(metadata=VAT_METADATA)
    net_pence = Pence()
    vat_pence = Pence()
    gross_pence = Pence()
    lead_time_days = fields.Integer()
    price_verdict = fields.Dict(
        allow_none=True, metadata={"description": "Where this unit price sits among trusts."}
    )
    cheaper_offer = fields.Dict(
        allow_none=True, metadata={"description": "A cheaper offer for the same product, if any."}
    )
    budget_check = fields.Dict(allow_none=True)
    problems = fields.List(fields.Nested(ProblemItemSchema))


class QuoteSchema(ma.Schema):
    id = fields.String()
    payment_method = fields.Enum(PaymentMethod, by_value=True)
    budget_id = fields.String(allow_none=True)
    card_top_up = fields.Boolean()
    lines = fields.List(fields.Nested(QuoteLineSchema))
    net_pence = Pence()
    vat_pence = Pence()
    gross_pence = Pence()
    budget_pence = Pence()
    card_pence = Pence()
    budget_check = fields.Dict(allow_none=True)
    orderable = fields.Boolean()
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()


class AddressSchema(ma.Schema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line1 = fields.String(required=True, validate=validate.Length(min=1, max=200))
    line2 = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    town = fields.String(required=True, validate=validate.Length(min=1, max=100))
    postcode = fields.String(
        required=True,
        validate=validate.Regexp(
            r"^[A-Za-z]{1,2}[0-9][A-Za-z0-9]? ?[0-9][A-Za-z]{2}$", error="Not a UK postcode."
        ),
    )


class OrderRequestSchema(ma.Schema):
    quote_id = fields.String(required=True, validate=validate.Length(min=1, max=40))
    delivery_address = fields.Nested(AddressSchema, required=True)
    po_number = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    card_payment_method = fields.String(
        load_default=None,
        validate=validate.Length(min=3, max=100),
        metadata={"description": "A Stripe PaymentMethod id (pm_…) for card payments and top-ups."},
    )


class OrderLineSchema(ma.Schema):
    position = fields.Integer()
    offer_id = fields.String()
    product_id = fields.String()
    quantity = fields.Integer()
    units_per_pack = fields.Integer()
    pack_price_pence = Pence()
    unit_price_pence = UnitPrice()
    vat_rate_percent = VatRate(metadata=VAT_METADATA)
    net_pence = Pence()
    vat_pence = Pence()
    gross_pence = Pence()


class CardPaymentSchema(ma.Schema):
    id = fields.String()
    payment_intent_id = fields.String()
    amount_pence = Pence()
    captured_pence = Pence()
    refunded_pence = Pence()
    status = fields.String()


class SupplierOrderSchema(ma.Schema):
    id = fields.String()
    order_id = fields.String()
    supplier_id = fields.String()
    status = fields.Enum(SupplierOrderStatus, by_value=True)
    status_reason = fields.String(allow_none=True)
    net_pence = Pence()
    vat_pence = Pence()
    gross_pence = Pence()
    budget_pence = Pence()
    card_pence = Pence()
    refunded_pence = Pence()
    lines = fields.List(fields.Nested(OrderLineSchema))
    card_payment = fields.Nested(CardPaymentSchema, allow_none=True)
    delivery_address = fields.Function(lambda so: so.order.delivery_address)
    po_number = fields.Function(lambda so: so.order.po_number)
    created_at = fields.AwareDateTime()
    dispatched_at = fields.AwareDateTime(allow_none=True)
    delivered_at = fields.AwareDateTime(allow_none=True)


class OrderSchema(ma.Schema):
    id = fields.String()
    quote_id = fields.String()
    organisation_id = fields.String()
    status = fields.Enum(OrderStatus, by_value=True)
    payment_method = fields.Enum(PaymentMethod, by_value=True)
    budget_id = fields.String(allow_none=True)
    approval_id = fields.String(allow_none=True)
    po_number = fields.String(allow_none=True)
    delivery_address = fields.Dict()
    net_pence = Pence()
    vat_pence = Pence()
    gross_pence = Pence()
    budget_pence = Pence()
    card_pence = Pence()
    supplier_orders = fields.List(
        fields.Nested(SupplierOrderSchema(exclude=("delivery_address", "po_number")))
    )
    created_at = fields.AwareDateTime()


class OrderListArgs(PageArgs):
    status = fields.Enum(OrderStatus, by_value=True, load_default=None)


class SupplierOrderListArgs(PageArgs):
    status = fields.Enum(SupplierOrderStatus, by_value=True, load_default=None)


class StatusReasonSchema(ma.Schema):
    reason = fields.String(load_default=None, validate=validate.Length(min=1, max=500))


class RefundRequestSchema(ma.Schema):
    amount_pence = Pence(required=True, validate=validate.Range(min=1, max=10**10))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class WebhookAckSchema(ma.Schema):
    received = fields.Boolean()
    outcome = fields.String()
