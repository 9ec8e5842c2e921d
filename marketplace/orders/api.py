"""Quotes, orders, supplier orders and the Stripe webhook."""

from __future__ import annotations

from flask import current_app, request

from ..accounts.models import Role
from ..auth import authenticated, current_principal
from ..errors import Problem, ServiceUnavailable
from ..idempotency import idempotent
from ..pagination import paginate
from ..schemas import page_of
from ..web import Blueprint, get_session
from . import quotes, service, webhooks
from .models import Order, SupplierOrder
from .payments import PaymentGateway, verify_webhook
from .schemas import (
    OrderListArgs,
    OrderRequestSchema,
    OrderSchema,
    QuoteRequestSchema,
    QuoteSchema,
    RefundRequestSchema,
    StatusReasonSchema,
    SupplierOrderListArgs,
    SupplierOrderSchema,
    WebhookAckSchema,
)

blp = Blueprint(
    "orders", __name__, description="Quotes, orders split by supplier, supplier orders, payments."
)

BUYING_ROLES = (Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.SUPPLIER)


def gateway() -> PaymentGateway | None:
    return current_app.extensions["marketplace"].payment_gateway


@blp.route("/quotes", methods=["POST"])
@authenticated(*BUYING_ROLES)
@blp.arguments(QuoteRequestSchema)
@blp.response(201, QuoteSchema)
def create_quote(body: dict):
    """Price a basket: every line priced, with price-variance verdicts and the budget check.

    Prices are locked for 15 minutes (`expires_at`). Lines that cannot be ordered (paused
    offer, below the minimum order quantity, not enough stock) carry `problems` and make the
    quote not `orderable`."""
    lines = [quotes.BasketLine(**line) for line in body.pop("lines")]
    return quotes.create_quote(get_session(), current_principal(), lines=lines, **body)


@blp.route("/quotes/<string:quote_id>", methods=["GET"])
@authenticated()
@blp.response(200, QuoteSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_quote(quote_id: str):
    """A quote you asked for."""
    return quotes.get_quote(get_session(), current_principal(), quote_id)


@blp.route("/orders", methods=["POST"])
@authenticated(*BUYING_ROLES)
@idempotent
@blp.arguments(OrderRequestSchema)
@blp.response(201, OrderSchema)
@blp.alt_response(402, response="PAYMENT_REQUIRED")
@blp.alt_response(409, response="CONFLICT")
def place_order(body: dict):
    """Place an order from a quote (send an `Idempotency-Key` header: a retry returns the same
    order). Stock is reserved, the payment applied, and the order split into one supplier order
    per supplier, all in one transaction."""
    return service.place_order(get_session(), current_principal(), gateway=gateway(), **body)


@blp.route("/orders", methods=["GET"])
@authenticated(Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.OPERATOR)
@blp.arguments(OrderListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(OrderSchema))
def list_orders(limit: int, cursor: str | None, status=None):
    """Orders you may see: your trust's, your own budget's, or your commissioner's budgets'."""
    session = get_session()
    stmt = service.visible_orders(session, current_principal())
    if status is not None:
        stmt = stmt.where(Order.status == status)
    return paginate(
        session,
        stmt,
        order_by=[Order.created_at, Order.id],
        cursor=cursor,
        limit=limit,
        descending=True,
    )


@blp.route("/orders/<string:order_id>", methods=["GET"])
@authenticated(Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.OPERATOR)
@blp.response(200, OrderSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_order(order_id: str):
    """One order with its supplier orders."""
    return service.get_order(get_session(), current_principal(), order_id)


@blp.route("/orders/<string:order_id>/cancel", methods=["POST"])
@authenticated(Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.OPERATOR)
@idempotent
@blp.arguments(StatusReasonSchema)
@blp.response(200, OrderSchema)
@blp.alt_response(409, response="CONFLICT")
def cancel_order(body: dict, order_id: str):
    """Cancel everything not yet dispatched: stock returns, holds are released, card
    authorisations cancelled."""
    return service.cancel_order(
        get_session(), current_principal(), order_id, gateway=gateway(), **body
    )


@blp.route("/supplier-orders", methods=["GET"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.arguments(SupplierOrderListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(SupplierOrderSchema))
def list_supplier_orders(limit: int, cursor: str | None, status=None):
    """Your supplier orders (operators: all)."""
    session = get_session()
    stmt = service.visible_supplier_orders(current_principal())
    if status is not None:
        stmt = stmt.where(SupplierOrder.status == status)
    return paginate(
        session,
        stmt,
        order_by=[SupplierOrder.created_at, SupplierOrder.id],
        cursor=cursor,
        limit=limit,
        descending=True,
    )


@blp.route("/supplier-orders/<string:supplier_order_id>", methods=["GET"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@blp.response(200, SupplierOrderSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_supplier_order(supplier_order_id: str):
    """One of your supplier orders, with the delivery address."""
    return service.get_supplier_order(get_session(), current_principal(), supplier_order_id)


def _transition_view(action: str):
    @authenticated(Role.SUPPLIER, Role.OPERATOR)
    @idempotent
    @blp.arguments(StatusReasonSchema)
    @blp.response(200, SupplierOrderSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def view(body: dict, supplier_order_id: str):
        return service.transition_supplier_order(
            get_session(), current_principal(), supplier_order_id, action, gateway=gateway(), **body
        )

    view.__name__ = f"{action}_supplier_order"
    view.__doc__ = {
        "accept": "Accept a placed supplier order.",
        "reject": "Reject a placed or accepted supplier order: stock, hold and card authorisation are given back.",
        "dispatch": "Dispatch an accepted supplier order: the budget hold and the card payment are captured.",
        "deliver": "Mark a dispatched supplier order delivered: a trust's lines become purchase records.",
    }[action]
    return view


for _action in service.SUPPLIER_TRANSITIONS:
    blp.route(f"/supplier-orders/<string:supplier_order_id>/{_action}", methods=["POST"])(
        _transition_view(_action)
    )


@blp.route("/supplier-orders/<string:supplier_order_id>/refund", methods=["POST"])
@authenticated(Role.SUPPLIER, Role.OPERATOR)
@idempotent
@blp.arguments(RefundRequestSchema)
@blp.response(200, SupplierOrderSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def refund_supplier_order(body: dict, supplier_order_id: str):
    """Refund (part of) a delivered supplier order: credits the budget and/or refunds the card."""
    return service.refund_supplier_order(
        get_session(), current_principal(), supplier_order_id, gateway=gateway(), **body
    )


@blp.route("/webhooks/stripe", methods=["POST"])
@blp.response(200, WebhookAckSchema)
@blp.alt_response(400, response="BAD_REQUEST")
def stripe_webhook():
    """Stripe's signed events (`Stripe-Signature`). Each event is applied once; replays and
    duplicates change nothing. A bad signature is refused (400) and changes nothing."""
    secret = current_app.extensions["marketplace"].settings.stripe_webhook_secret
    if not secret:
        raise ServiceUnavailable(
            "Stripe webhooks are not configured (STRIPE_WEBHOOK_SECRET).",
            code="webhooks-not-configured",
        )
    try:
        event = verify_webhook(
            request.get_data(cache=True), request.headers.get("Stripe-Signature"), secret
        )
    except ValueError as error:
        raise Problem(
            f"The webhook signature is not valid: {error}.", status=400, code="bad-signature"
        ) from None
    outcome = webhooks.handle_event(get_session(), event.to_dict())
    return {"received": True, "outcome": outcome}
