"""Orders: placed from a quote in one transaction, split into one supplier order per supplier.

Supplier-order state machine (an invalid transition answers 409)::

    pending_approval --approve--> placed --accept--> accepted --dispatch--> dispatched --deliver--> delivered
          |  \\--reject (manager)--> rejected          |                                             |
          |                                            \\--reject (supplier)--> rejected               \\--refund--> refunded
          \\--cancel (buyer)--> cancelled   placed/accepted --cancel (buyer)--> cancelled              (partial refunds keep delivered)

Money follows the state: placing holds the budget part and authorises the card part;
dispatch captures both; cancel/reject releases the hold, cancels the card authorisation and
returns the stock; a refund after delivery credits the budget and/or refunds the card.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from .. import audit
from ..accounts.models import Role
from ..accounts.service import Principal, require_role
from ..budgets import approvals
from ..budgets import ledger as budget_ledger
from ..budgets import rules as budget_rules
from ..budgets import service as budgets
from ..catalog import service as catalog
from ..db import utcnow
from ..errors import Conflict, NotFound, ValidationFailed
from ..pricing import service as pricing
from ..transparency import service as transparency
from . import quotes
from .models import (
    CardPayment,
    CardPaymentStatus,
    Order,
    OrderLine,
    OrderStatus,
    PaymentMethod,
    Quote,
    SupplierOrder,
)
from .models import SupplierOrderStatus as S
from .payments import PaymentGateway, PaymentUnavailable

APPROVAL_SUBJECT = "order"
ORDER_FIELDS = (
    "status",
    "gross_pence",
    "budget_pence",
    "card_pence",
    "payment_method",
    "po_number",
)

SUPPLIER_TRANSITIONS: dict[str, tuple[frozenset[S], S]] = {
    "accept": (frozenset({S.PLACED}), S.ACCEPTED),
    "reject": (frozenset({S.PLACED, S.ACCEPTED}), S.REJECTED),
    "dispatch": (frozenset({S.ACCEPTED}), S.DISPATCHED),
    "deliver": (frozenset({S.DISPATCHED}), S.DELIVERED),
}
# Supplier-order moves that the open-data feed publishes (as OCDS releases), by event name.
PUBLISHED_EVENTS = {"dispatch": "dispatched", "deliver": "delivered", "reject": "rejected"}
CANCELLABLE = frozenset({S.PENDING_APPROVAL, S.PLACED, S.ACCEPTED})
CLOSED = frozenset({S.REJECTED, S.CANCELLED})


# --- placing --------------------------------------------------------------------------------


def place_order(
    session: Session,
    actor: Principal,
    *,
    quote_id: str,
    delivery_address: dict[str, Any],
    po_number: str | None = None,
    card_payment_method: str | None = None,
    gateway: PaymentGateway | None = None,
    now: datetime | None = None,
) -> Order:
    now = now or utcnow()
    quote = quotes.get_quote(session, actor, quote_id)
    _require_orderable(session, quote, now)
    _require_payment_details(quote, po_number, card_payment_method, gateway)
    budget_check = (
        _check_budget(session, actor, quote)
        if quote.payment_method == PaymentMethod.BUDGET
        else None
    )
    for line in quote.lines:
        catalog.reserve_stock(session, line.offer_id, line.quantity)
    order = _build_order(session, actor, quote, delivery_address, po_number)
    if budget_check is not None:
        _hold_budget(session, actor, quote, order, *budget_check)
    if order.card_pence:
        _authorise_cards(session, order, quote, card_payment_method or "", gateway)
    transparency.publish_order_placed(session, order)
    audit.record(
        session, actor, "order.place", "order", order.id, after=audit.snapshot(order, ORDER_FIELDS)
    )
    return order


def _require_orderable(session: Session, quote: Quote, now: datetime) -> None:
    if session.scalar(select(Order.id).where(Order.quote_id == quote.id)):
        raise Conflict("An order was already placed from this quote.", code="quote-already-ordered")
    if quote.expires_at <= now:
        raise Conflict(
            "The quote has expired; ask for a new one (prices may have changed).",
            code="quote-expired",
        )
    if not quote.orderable:
        problems = [
            {"line": line.position, **problem} for line in quote.lines for problem in line.problems
        ]
        raise Conflict(
            "Some lines of the quote cannot be ordered.",
            code="quote-not-orderable",
            problems=problems,
        )


def _require_payment_details(
    quote: Quote,
    po_number: str | None,
    card_payment_method: str | None,
    gateway: PaymentGateway | None,
) -> None:
    if quote.payment_method == PaymentMethod.PURCHASE_ORDER and not (po_number or "").strip():
        raise ValidationFailed(
            "A purchase-order payment needs your PO number.", errors={"po_number": ["Required."]}
        )
    if quote.card_pence and not card_payment_method:
        raise ValidationFailed(
            "A card payment needs a payment method.", errors={"card_payment_method": ["Required."]}
        )
    if quote.card_pence and gateway is None:
        raise PaymentUnavailable("Card payments are not configured on this marketplace.")


def _build_order(
    session: Session,
    actor: Principal,
    quote: Quote,
    delivery_address: dict[str, Any],
    po_number: str | None,
) -> Order:
    order = Order(
        quote_id=quote.id,
        organisation_id=quote.organisation_id,
        placed_by=actor.user_id,
        payment_method=quote.payment_method,
        budget_id=quote.budget_id,
        po_number=(po_number or "").strip() or None,
        delivery_address=delivery_address,
        status=OrderStatus.PLACED,
        net_pence=quote.net_pence,
        vat_pence=quote.vat_pence,
        gross_pence=quote.gross_pence,
        budget_pence=quote.budget_pence,
        card_pence=quote.card_pence,
    )
    # Ids are made in Python: the order, its supplier orders and lines are inserted in one
    # flush (a batch per table), not one round trip each.
    session.add(order)
    by_supplier: dict[str, list] = {}
    for line in quote.lines:
        by_supplier.setdefault(line.supplier_id, []).append(line)
    card_shares = _split(
        quote.card_pence, [sum(li.gross_pence for li in ls) for ls in by_supplier.values()]
    )
    for (supplier_id, lines), card_share in zip(by_supplier.items(), card_shares, strict=True):
        gross = sum(li.gross_pence for li in lines)
        supplier_order = SupplierOrder(
            order_id=order.id,
            supplier_id=supplier_id,
            status=S.PLACED,
            net_pence=sum(li.net_pence for li in lines),
            vat_pence=sum(li.vat_pence for li in lines),
            gross_pence=gross,
            card_pence=card_share,
            budget_pence=gross - card_share if quote.payment_method == PaymentMethod.BUDGET else 0,
            budget_holds=[],
        )
        session.add(supplier_order)
        for line in lines:
            session.add(
                OrderLine(
                    supplier_order_id=supplier_order.id,
                    position=line.position,
                    offer_id=line.offer_id,
                    product_id=line.product_id,
                    quantity=line.quantity,
                    units_per_pack=line.units_per_pack,
                    pack_price_pence=line.pack_price_pence,
                    unit_price_pence=line.unit_price_pence,
                    vat_rate_percent=line.vat_rate_percent,
                    net_pence=line.net_pence,
                    vat_pence=line.vat_pence,
                    gross_pence=line.gross_pence,
                )
            )
    session.flush()
    session.refresh(order)
    return order


def _split(total: int, weights: list[int]) -> list[int]:
    """Split ``total`` pence in proportion to ``weights`` (largest remainder; sums exactly)."""
    whole = sum(weights)
    if total == 0 or whole == 0:
        return [0] * len(weights)
    shares = [total * w // whole for w in weights]
    remainders = sorted(
        range(len(weights)), key=lambda i: (total * weights[i]) % whole, reverse=True
    )
    for i in remainders[: total - sum(shares)]:
        shares[i] += 1
    return shares


def _check_budget(session: Session, actor: Principal, quote: Quote) -> tuple[Any, Any]:
    """The budget check again, live (the quote's may be minutes old); a refusal stops the order
    before anything is written."""
    budget = budgets.get_budget(session, actor, quote.budget_id or "")
    check = budget_rules.check_spend(session, budget, quotes.spend_items(quote))
    if check.verdict == budget_rules.REFUSED:
        raise Conflict(
            "The budget cannot pay for this order.",
            code="budget-refused",
            reasons=check.all_reasons(),
        )
    return budget, check


def _hold_budget(
    session: Session, actor: Principal, quote: Quote, order: Order, budget: Any, check: Any
) -> None:
    line_by_quote_line = {line.id: line for line in quote.lines}
    supplier_orders = {so.supplier_id: so for so in order.supplier_orders}
    for decision in check.items:
        quote_line = line_by_quote_line[decision.item.ref]
        amount = decision.budget_pence if quote.card_top_up else quote_line.gross_pence
        if amount <= 0:
            continue
        supplier_order = supplier_orders[quote_line.supplier_id]
        entry = budget_ledger.hold(
            session,
            actor,
            budget,
            amount,
            plan_line_id=decision.plan_line.id if decision.plan_line else None,
            category_id=decision.category.id,
            order_ref=supplier_order.id,
            reason=f"Order {order.id}",
        )
        supplier_order.budget_holds = [
            *supplier_order.budget_holds,
            {"hold_id": entry.id, "amount_pence": amount},
        ]
    if check.verdict == budget_rules.NEEDS_APPROVAL:
        approval = approvals.request_approval(
            session,
            budget,
            order.id,
            quote.budget_pence,
            [
                {"offer_id": li.offer_id, "quantity": li.quantity, "gross_pence": li.gross_pence}
                for li in quote.lines
            ],
            check.all_reasons(),
            subject_type=APPROVAL_SUBJECT,
            actor=actor,
        )
        order.approval_id = approval.id
        order.status = OrderStatus.PENDING_APPROVAL
        for supplier_order in order.supplier_orders:
            supplier_order.status = S.PENDING_APPROVAL


def _authorise_cards(
    session: Session,
    order: Order,
    quote: Quote,
    card_payment_method: str,
    gateway: PaymentGateway | None,
) -> None:
    assert gateway is not None  # checked in _require_payment_details
    authorised: list[CardPayment] = []
    try:
        for supplier_order in order.supplier_orders:
            if not supplier_order.card_pence:
                continue
            # The same quote, supplier and card always make the same reference, so a retry
            # reuses Stripe's first answer; another card after a decline is a new attempt.
            card = hashlib.sha256(card_payment_method.encode()).hexdigest()[:12]
            reference = f"{quote.id}-{supplier_order.supplier_id}-{card}"
            result = gateway.authorise(
                reference=reference,
                amount_pence=supplier_order.card_pence,
                payment_method=card_payment_method,
                description=f"NHS marketplace order {order.id}",
            )
            payment = CardPayment(
                supplier_order_id=supplier_order.id,
                reference=reference,
                payment_intent_id=result.intent_id,
                amount_pence=supplier_order.card_pence,
                status=CardPaymentStatus.AUTHORISED,
            )
            supplier_order.card_payment = payment
            authorised.append(payment)
    except Exception:
        # Nothing of this order survives (the transaction rolls back): give back any
        # authorisation already made before reporting the failure.
        for payment in authorised:
            # If this cancel fails too, the authorisation lapses unused; the original error matters more.
            with contextlib.suppress(Exception):
                gateway.cancel(reference=payment.reference, intent_id=payment.payment_intent_id)
        raise
    session.flush()


# --- reading --------------------------------------------------------------------------------


def visible_orders(session: Session, actor: Principal) -> Select[tuple[Order]]:
    stmt = select(Order)
    if actor.role == Role.OPERATOR:
        return stmt
    if actor.role == Role.BUYER:
        return stmt.where(Order.organisation_id == actor.organisation_id)
    if actor.role in (Role.BUDGET_HOLDER, Role.BUDGET_MANAGER):
        budget_ids = budgets.visible_budgets(actor).with_only_columns(budgets.Budget.id)
        return stmt.where((Order.budget_id.in_(budget_ids)) | (Order.placed_by == actor.user_id))
    require_role(actor, Role.BUYER, Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.OPERATOR)
    return stmt


def get_order(session: Session, actor: Principal, order_id: str) -> Order:
    order = session.scalar(visible_orders(session, actor).where(Order.id == order_id))
    if order is None:
        raise NotFound(f"No order with id {order_id!r} is visible to you.", code="order-not-found")
    return order


def visible_supplier_orders(actor: Principal) -> Select[tuple[SupplierOrder]]:
    require_role(actor, Role.SUPPLIER, Role.OPERATOR)
    stmt = select(SupplierOrder)
    if actor.role == Role.SUPPLIER:
        stmt = stmt.where(SupplierOrder.supplier_id == actor.organisation_id)
    return stmt


def get_supplier_order(session: Session, actor: Principal, supplier_order_id: str) -> SupplierOrder:
    supplier_order = session.scalar(
        visible_supplier_orders(actor).where(SupplierOrder.id == supplier_order_id)
    )
    if supplier_order is None:
        raise NotFound(
            f"No supplier order with id {supplier_order_id!r} is visible to you.",
            code="supplier-order-not-found",
        )
    return supplier_order


# --- the supplier's transitions ---------------------------------------------------------------


def transition_supplier_order(
    session: Session,
    actor: Principal,
    supplier_order_id: str,
    action: str,
    *,
    reason: str | None = None,
    gateway: PaymentGateway | None = None,
    now: datetime | None = None,
) -> SupplierOrder:
    supplier_order = get_supplier_order(session, actor, supplier_order_id)
    allowed_from, target = SUPPLIER_TRANSITIONS[action]
    _require_state(supplier_order, allowed_from, action)
    effects: dict[str, Callable[[], None]] = {
        "accept": lambda: None,
        "reject": lambda: _give_back(
            session, actor, supplier_order, gateway, reason or "Rejected by the supplier"
        ),
        "dispatch": lambda: _capture(session, actor, supplier_order, gateway, now or utcnow()),
        "deliver": lambda: _deliver(session, actor, supplier_order, now or utcnow()),
    }
    before = supplier_order.status
    effects[action]()
    supplier_order.status = target
    supplier_order.status_reason = reason
    _refresh_order_status(supplier_order.order)
    if action in PUBLISHED_EVENTS:
        transparency.publish_supplier_order_event(session, supplier_order, PUBLISHED_EVENTS[action])
    audit.record(
        session,
        actor,
        f"supplier_order.{action}",
        "supplier_order",
        supplier_order.id,
        before={"status": before},
        after={"status": target, "reason": reason},
    )
    return supplier_order


def _require_state(supplier_order: SupplierOrder, allowed: Iterable[S], action: str) -> None:
    if supplier_order.status not in allowed:
        raise Conflict(
            f"A supplier order that is {supplier_order.status.value} cannot be {action}ed"
            f" (only from {', '.join(sorted(s.value for s in allowed))}).",
            code="invalid-transition",
            current_status=supplier_order.status.value,
        )


def _give_back(
    session: Session,
    actor: Principal,
    supplier_order: SupplierOrder,
    gateway: PaymentGateway | None,
    reason: str,
) -> None:
    """Cancel or reject: return the stock, release the budget hold, cancel the card authorisation."""
    for line in supplier_order.lines:
        catalog.release_stock(session, line.offer_id, line.quantity)
    budget = _budget_of(session, supplier_order)
    for hold in supplier_order.budget_holds:
        budget_ledger.release(session, _system(actor), budget, hold["hold_id"], reason=reason)
    payment = supplier_order.card_payment
    if payment is not None and payment.status == CardPaymentStatus.AUTHORISED:
        _require_gateway(gateway).cancel(
            reference=payment.reference, intent_id=payment.payment_intent_id
        )
        payment.status = CardPaymentStatus.CANCELED


def _capture(
    session: Session,
    actor: Principal,
    supplier_order: SupplierOrder,
    gateway: PaymentGateway | None,
    now: datetime,
) -> None:
    budget = _budget_of(session, supplier_order)
    captured = []
    for hold in supplier_order.budget_holds:
        result = budget_ledger.capture(
            session, _system(actor), budget, hold["hold_id"], reason="Dispatched"
        )
        captured.append({**hold, "capture_id": result.capture.id})
    if captured:
        supplier_order.budget_holds = captured
    payment = supplier_order.card_payment
    if payment is not None:
        if payment.status != CardPaymentStatus.AUTHORISED:
            raise Conflict("The card payment is no longer authorised.", code="card-not-authorised")
        _require_gateway(gateway).capture(
            reference=payment.reference,
            intent_id=payment.payment_intent_id,
            amount_pence=payment.amount_pence,
        )
        payment.status = CardPaymentStatus.CAPTURED
        payment.captured_pence = payment.amount_pence
    supplier_order.dispatched_at = now


def _deliver(
    session: Session, actor: Principal, supplier_order: SupplierOrder, now: datetime
) -> None:
    """Delivery closes the loop: a trust's delivered lines become purchase records."""
    supplier_order.delivered_at = now
    order = supplier_order.order
    if order.payment_method == PaymentMethod.BUDGET:
        return  # personal budgets are not trust purchases
    pricing.record_marketplace_purchases(
        session,
        trust_id=order.organisation_id,
        order_reference=order.id,
        order_date=now.date(),
        supplier_id=supplier_order.supplier_id,
        lines=[
            pricing.DeliveredLine(
                line.position, line.product_id, line.quantity, line.net_pence, line.units_per_pack
            )
            for line in supplier_order.lines
        ],
        actor=_system(actor),
    )


def refund_supplier_order(
    session: Session,
    actor: Principal,
    supplier_order_id: str,
    *,
    amount_pence: int,
    reason: str,
    gateway: PaymentGateway | None = None,
) -> SupplierOrder:
    supplier_order = get_supplier_order(session, actor, supplier_order_id)
    _require_state(supplier_order, {S.DELIVERED}, "refund")
    refundable = supplier_order.gross_pence - supplier_order.refunded_pence
    if amount_pence < 1 or amount_pence > refundable:
        raise Conflict(
            f"At most {refundable} pence can still be refunded on this supplier order.",
            code="refund-too-large",
            refundable_pence=refundable,
        )
    card_part = min(
        amount_pence * supplier_order.card_pence // supplier_order.gross_pence
        if supplier_order.gross_pence
        else 0,
        (supplier_order.card_payment.captured_pence - supplier_order.card_payment.refunded_pence)
        if supplier_order.card_payment
        else 0,
    )
    # Purchase-order lines are credited on the supplier's invoice (a credit note): no money moves here.
    budget_part = amount_pence - card_part if supplier_order.order.budget_id else 0
    invoice_credit = amount_pence - card_part - budget_part
    if budget_part:
        _refund_budget(session, actor, supplier_order, budget_part, reason)
    if card_part:
        payment = supplier_order.card_payment
        assert payment is not None
        payment.refund_count += 1
        _require_gateway(gateway).refund(
            reference=payment.reference,
            intent_id=payment.payment_intent_id,
            amount_pence=card_part,
            sequence=payment.refund_count,
        )
        payment.refunded_pence += card_part
        payment.status = (
            CardPaymentStatus.REFUNDED
            if payment.refunded_pence >= payment.captured_pence
            else CardPaymentStatus.PARTIALLY_REFUNDED
        )
    supplier_order.refunded_pence += amount_pence
    if supplier_order.refunded_pence >= supplier_order.gross_pence:
        supplier_order.status = S.REFUNDED
    _refresh_order_status(supplier_order.order)
    transparency.publish_supplier_order_event(session, supplier_order, "refunded")
    audit.record(
        session,
        actor,
        "supplier_order.refund",
        "supplier_order",
        supplier_order.id,
        after={
            "amount_pence": amount_pence,
            "card_pence": card_part,
            "budget_pence": budget_part,
            "invoice_credit_pence": invoice_credit,
            "reason": reason,
        },
    )
    return supplier_order


def _refund_budget(
    session: Session, actor: Principal, supplier_order: SupplierOrder, amount: int, reason: str
) -> None:
    budget = _budget_of(session, supplier_order)
    left = amount
    for hold in supplier_order.budget_holds:
        if not left:
            break
        already = hold.get("refunded_pence", 0)
        part = min(left, hold["amount_pence"] - already)
        if part <= 0:
            continue
        budget_ledger.refund(
            session, _system(actor), budget, hold["capture_id"], part, reason=reason
        )
        hold["refunded_pence"] = already + part
        left -= part
    supplier_order.budget_holds = [dict(h) for h in supplier_order.budget_holds]


# --- the buyer's cancellation ---------------------------------------------------------------


def cancel_order(
    session: Session,
    actor: Principal,
    order_id: str,
    *,
    reason: str | None = None,
    gateway: PaymentGateway | None = None,
) -> Order:
    order = get_order(session, actor, order_id)
    cancellable = [so for so in order.supplier_orders if so.status in CANCELLABLE]
    if not cancellable:
        raise Conflict(
            "Nothing in this order can be cancelled any more (dispatched, delivered or already closed).",
            code="invalid-transition",
        )
    for supplier_order in cancellable:
        _give_back(session, actor, supplier_order, gateway, reason or "Cancelled by the buyer")
        supplier_order.status = S.CANCELLED
        supplier_order.status_reason = reason
        transparency.publish_supplier_order_event(session, supplier_order, "cancelled")
    _refresh_order_status(order)
    audit.record(
        session,
        actor,
        "order.cancel",
        "order",
        order.id,
        after={"status": order.status, "reason": reason},
    )
    return order


# --- the budget manager's decision ------------------------------------------------------------


def on_approval_decision(session: Session, approval: Any, actor: Principal) -> None:
    """Registered with the budgets domain: an approved order is placed, a rejected one is
    rejected and everything it held is given back."""
    order = session.get(Order, approval.subject_ref)
    if order is None or order.status != OrderStatus.PENDING_APPROVAL:
        return
    approved = str(getattr(approval.status, "value", approval.status)) == "approved"
    for supplier_order in order.supplier_orders:
        if supplier_order.status != S.PENDING_APPROVAL:
            continue
        if approved:
            supplier_order.status = S.PLACED
        else:
            _give_back(
                session,
                actor,
                supplier_order,
                _gateway_for_decisions(session),
                "Rejected by the budget manager",
            )
            supplier_order.status = S.REJECTED
            supplier_order.status_reason = getattr(approval, "decision_reason", None)
    _refresh_order_status(order)
    if approved:
        transparency.publish_order_placed(session, order)
    audit.record(
        session, actor, "order.approval_decision", "order", order.id, after={"status": order.status}
    )


def _gateway_for_decisions(session: Session) -> PaymentGateway | None:
    """How to reach Stripe when a manager's decision (arriving through the budgets API) must
    cancel a card authorisation: the app puts its gateway in its sessions' ``info``."""
    gateway = session.info.get("payment_gateway")
    return gateway() if gateway is not None else None


approvals.register_decision_handler(APPROVAL_SUBJECT, on_approval_decision)


# --- helpers --------------------------------------------------------------------------------


def _refresh_order_status(order: Order) -> None:
    statuses = {so.status for so in order.supplier_orders}
    if statuses == {S.PENDING_APPROVAL}:
        order.status = OrderStatus.PENDING_APPROVAL
    elif statuses <= {S.REJECTED}:
        order.status = OrderStatus.REJECTED
    elif statuses <= CLOSED:
        order.status = OrderStatus.CANCELLED
    elif statuses <= CLOSED | {S.DELIVERED, S.REFUNDED}:
        order.status = OrderStatus.COMPLETED
    else:
        order.status = OrderStatus.PLACED


def _budget_of(session: Session, supplier_order: SupplierOrder) -> Any:
    budget_id = supplier_order.order.budget_id
    return budgets.load_budget(session, budget_id) if budget_id else None


def _system(actor: Principal) -> Principal:
    """Ledger movements caused by an order's lifecycle are the marketplace's, on the actor's behalf."""
    return Principal(
        user_id=actor.user_id,
        organisation_id=actor.organisation_id,
        role=Role.OPERATOR,
        label=f"orders (by {actor.label})",
        request_id=actor.request_id,
    )


def _require_gateway(gateway: PaymentGateway | None) -> PaymentGateway:
    if gateway is None:
        raise PaymentUnavailable("Card payments are not configured on this marketplace.")
    return gateway
