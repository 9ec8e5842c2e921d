"""Stripe webhook events and reconciliation: bring local card payments in line with Stripe.

Events are recorded once (their id is the primary key), so a replay or a duplicate delivery
changes nothing. The same reconciliation serves ``marketplace payments reconcile``, which asks
Stripe for the state of every open card payment (for events that never arrived).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import audit
from ..accounts.service import Principal
from .models import CardPayment, CardPaymentStatus, StripeEvent
from .models import SupplierOrderStatus as S
from .payments import PaymentGateway

STRIPE_ACTOR = Principal.system("stripe")
HANDLED = {
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "charge.refunded",
}


def _intent_id(event_type: str, obj: dict[str, Any]) -> str | None:
    if event_type.startswith("payment_intent."):
        return obj.get("id")
    return obj.get("payment_intent")


def handle_event(session: Session, event: dict[str, Any]) -> str:
    """Apply one verified Stripe event; returns what happened (for the response and logs)."""
    event_id = str(event.get("id") or "")
    event_type = str(event.get("type") or "")
    if not event_id:
        return "ignored: no event id"
    if session.get(StripeEvent, event_id) is not None:
        return "duplicate: already processed"
    obj = (event.get("data") or {}).get("object") or {}
    intent_id = _intent_id(event_type, obj)
    outcome = "ignored: not an event the marketplace uses"
    if event_type in HANDLED and intent_id:
        payment = session.scalar(
            select(CardPayment).where(CardPayment.payment_intent_id == intent_id)
        )
        outcome = (
            "ignored: unknown payment intent"
            if payment is None
            else _apply(session, payment, event_type, obj)
        )
    session.add(
        StripeEvent(
            id=event_id, type=event_type, payment_intent_id=intent_id, outcome=outcome[:200]
        )
    )
    session.flush()
    return outcome


def _apply(session: Session, payment: CardPayment, event_type: str, obj: dict[str, Any]) -> str:
    before = payment.status
    if event_type == "payment_intent.succeeded":
        received = int(obj.get("amount_received") or payment.amount_pence)
        payment.captured_pence = max(payment.captured_pence, received)
        if payment.status == CardPaymentStatus.AUTHORISED:
            payment.status = CardPaymentStatus.CAPTURED
    elif event_type == "payment_intent.payment_failed":
        if payment.status == CardPaymentStatus.AUTHORISED:
            payment.status = CardPaymentStatus.FAILED
    elif event_type == "payment_intent.canceled":
        if payment.status == CardPaymentStatus.AUTHORISED:
            payment.status = CardPaymentStatus.CANCELED
    elif event_type == "charge.refunded":
        refunded = int(obj.get("amount_refunded") or 0)
        if refunded > payment.refunded_pence:
            payment.refunded_pence = refunded
            payment.status = (
                CardPaymentStatus.REFUNDED
                if refunded >= max(payment.captured_pence, 1)
                else CardPaymentStatus.PARTIALLY_REFUNDED
            )
    if payment.status == before:
        return f"no change: payment {payment.id} is {payment.status.value}"
    _flag_supplier_order(session, payment)
    audit.record(
        session,
        STRIPE_ACTOR,
        f"card_payment.{event_type}",
        "card_payment",
        payment.id,
        before={"status": before},
        after={"status": payment.status},
    )
    return f"payment {payment.id}: {before.value} -> {payment.status.value}"


def _flag_supplier_order(session: Session, payment: CardPayment) -> None:
    """A card authorisation that failed or was cancelled outside the marketplace cannot pay for
    dispatch: say so on the supplier order so the supplier and buyer see it."""
    if payment.status not in (CardPaymentStatus.FAILED, CardPaymentStatus.CANCELED):
        return
    from .models import SupplierOrder

    supplier_order = session.get(SupplierOrder, payment.supplier_order_id)
    if supplier_order is not None and supplier_order.status in (
        S.PLACED,
        S.ACCEPTED,
        S.PENDING_APPROVAL,
    ):
        supplier_order.status_reason = (
            f"Card payment {payment.status.value} at the payment provider."
        )


STRIPE_STATUS_EVENTS = {
    "succeeded": "payment_intent.succeeded",
    "canceled": "payment_intent.canceled",
    "requires_payment_method": "payment_intent.payment_failed",
}


def reconcile(session: Session, gateway: PaymentGateway) -> list[str]:
    """Ask Stripe about every open card payment and apply what it says."""
    outcomes = []
    open_payments = session.scalars(
        select(CardPayment).where(
            CardPayment.status.in_([CardPaymentStatus.AUTHORISED, CardPaymentStatus.CAPTURED])
        )
    ).all()
    for payment in open_payments:
        status = gateway.retrieve(payment.payment_intent_id)
        event_type = STRIPE_STATUS_EVENTS.get(status)
        if event_type is None or (
            event_type == "payment_intent.succeeded"
            and payment.status == CardPaymentStatus.CAPTURED
        ):
            outcomes.append(f"payment {payment.id}: {payment.status.value} (Stripe: {status})")
            continue
        outcomes.append(_apply(session, payment, event_type, {"id": payment.payment_intent_id}))
    return outcomes
