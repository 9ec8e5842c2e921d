"""Demo orders in every state, so a newcomer can follow one from quote to delivery.

Trust orders are paid by purchase order (each has a ``DEMO-`` PO number, which is how a second
run finds them); personal-budget orders are paid from Hamid's direct payment. Card payments
need Stripe (``STRIPE_API_KEY``), so the demo makes none.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounts import service as accounts
from ..accounts.service import Principal
from ..catalog import service as catalog
from ..catalog.models import Offer
from ..errors import NotFound, Problem
from ..orders import quotes
from ..orders import service as orders
from ..orders.models import Order
from . import DemoContext

NEWCASTLE = {
    "name": "Supplies, Freeman Hospital",
    "line1": "Freeman Road",
    "town": "Newcastle upon Tyne",
    "postcode": "NE7 7DN",
}
LEEDS = {
    "name": "Stores, St James's University Hospital",
    "line1": "Beckett Street",
    "town": "Leeds",
    "postcode": "LS9 7TF",
}
HOME = {
    "name": "Hamid Holder",
    "line1": "12 Kingsholm Road",
    "town": "Gloucester",
    "postcode": "GL1 3AX",
}

# (PO number, buyer, address, [(category, packs)], steps the supplier takes after placing)
TRUST_ORDERS = (
    ("DEMO-PO-1001", "buyer@rtd.demo", NEWCASTLE, [("18424300", 40), ("33141110", 20)], []),
    ("DEMO-PO-1002", "buyer@rtd.demo", NEWCASTLE, [("MKT-HOSIERY-AE", 30)], ["accept"]),
    ("DEMO-PO-1003", "buyer@rr8.demo", LEEDS, [("33141200", 10)], ["accept", "dispatch"]),
    (
        "DEMO-PO-1004",
        "buyer@rr8.demo",
        LEEDS,
        [("18424300", 60), ("MKT-HOSIERY-AE", 12)],
        ["accept", "dispatch", "deliver"],
    ),
    (
        "DEMO-PO-1005",
        "buyer@rtd.demo",
        NEWCASTLE,
        [("33141113", 25)],
        ["accept", "dispatch", "deliver", "refund"],
    ),
    ("DEMO-PO-1006", "buyer@rtd.demo", NEWCASTLE, [("33141320", 5)], ["cancel"]),
    ("DEMO-PO-1007", "buyer@rr8.demo", LEEDS, [("33141123", 8)], ["reject"]),
)


def _principal(session: Session, email: str) -> Principal:
    return Principal.for_user(accounts.find_user_by_email(session, email))


def _offer(
    session: Session, category_code: str, packs: int, *, dearest: bool = False
) -> Offer | None:
    """The cheapest (or dearest) active offer in the category with enough stock and a small
    enough minimum order, ties broken by id so that every run picks the same one."""
    try:
        product_ids = catalog.product_ids_in_category(session, category_code)
    except NotFound:
        return None
    candidates = [
        offer
        for product_id in product_ids
        for offer in catalog.active_offers(session, product_id)
        if offer.stock >= packs and offer.min_order_qty <= packs
    ]
    if not candidates:
        return None
    price = (lambda o: -o.pack_price_pence) if dearest else (lambda o: o.pack_price_pence)
    return min(candidates, key=lambda o: (price(o), o.product.name, o.supplier_id))


def _place(
    session: Session, actor: Principal, lines: list[tuple[Offer, int]], **kwargs
) -> Order | None:
    basket = [quotes.BasketLine(offer.id, packs) for offer, packs in lines]
    method = kwargs.pop("payment_method", "purchase_order")
    budget_id = kwargs.pop("budget_id", None)
    quote = quotes.create_quote(
        session, actor, lines=basket, payment_method=method, budget_id=budget_id
    )
    return orders.place_order(session, actor, quote_id=quote.id, **kwargs)


def _supplier(session: Session, supplier_id: str) -> Principal:
    """Act as the supplier organisation's first user (the demo makes one per supplier)."""
    user = session.scalar(accounts.list_users(session, organisation_id=supplier_id).limit(1))
    return Principal.for_user(user)


def _advance(session: Session, order: Order, steps: list[str], buyer: Principal) -> None:
    for step in steps:
        if step == "cancel":
            orders.cancel_order(session, buyer, order.id, reason="Ordered by mistake")
            continue
        for supplier_order in order.supplier_orders:
            supplier = _supplier(session, supplier_order.supplier_id)
            if step == "refund":
                orders.refund_supplier_order(
                    session,
                    supplier,
                    supplier_order.id,
                    amount_pence=max(1, supplier_order.gross_pence // 10),
                    reason="Two packs arrived damaged",
                )
            else:
                reason = "This product line is discontinued" if step == "reject" else None
                orders.transition_supplier_order(
                    session, supplier, supplier_order.id, step, reason=reason
                )


def _trust_orders(session: Session, context: DemoContext) -> None:
    for po_number, email, address, wanted, steps in TRUST_ORDERS:
        buyer = _principal(session, email)
        exists = session.scalar(
            select(Order.id).where(
                Order.po_number == po_number, Order.organisation_id == buyer.organisation_id
            )
        )
        if exists:
            continue
        lines = [
            (offer, packs) for code, packs in wanted if (offer := _offer(session, code, packs))
        ]
        if not lines:
            continue
        order = _place(session, buyer, lines, delivery_address=address, po_number=po_number)
        if order is not None:
            _advance(session, order, steps, buyer)


def _budget_order(
    session: Session, context: DemoContext, lines: list[tuple[Offer, int]], budget_id: str
) -> Order | None:
    hamid = _principal(session, "holder.two@phb.demo")
    try:
        with session.begin_nested():  # a refusal must leave nothing of the attempt behind
            return _place(
                session,
                hamid,
                lines,
                payment_method="budget",
                budget_id=budget_id,
                delivery_address=HOME,
            )
    except Problem as problem:  # the budget's own demo history may leave too little
        context.progress(f"  (a budget-paid demo order was not placed: {problem.detail})")
        return None


def _budget_orders(session: Session, context: DemoContext) -> None:
    """Hamid's direct payment: an app bought and delivered, and a smart display that costs more
    than the approval threshold and waits for his care coordinator."""
    budget_id = context.objects.get("budgets", {}).get("PHB-014")
    if not budget_id or session.scalar(select(Order.id).where(Order.budget_id == budget_id)):
        return
    app = _offer(session, "48180000", 1)
    order = _budget_order(session, context, [(app, 1)], budget_id) if app is not None else None
    if order is not None and order.status.value == "placed":
        _advance(
            session,
            order,
            ["accept", "dispatch", "deliver"],
            _principal(session, "holder.two@phb.demo"),
        )
    display = _offer(session, "MKT-VOICE", 1, dearest=True)
    if display is not None:
        _budget_order(session, context, [(display, 1)], budget_id)


def seed(session: Session, context: DemoContext) -> None:
    context.progress("Placing demo orders in every state…")
    _trust_orders(session, context)
    _budget_orders(session, context)
    buyer = "-H 'Authorization: Bearer {token:buyer}'"
    supplier = "-H 'Authorization: Bearer {token:supplier}'"
    context.examples += [
        ("Your trust's orders (as the Newcastle buyer)", f"curl -s {buyer} {{base}}/api/v1/orders"),
        (
            "A supplier's orders to fulfil",
            f"curl -s {supplier} '{{base}}/api/v1/supplier-orders?status=placed'",
        ),
    ]
