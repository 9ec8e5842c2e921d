"""Quotes: a basket priced line by line, with price-variance verdicts and the budget check.

Prices are locked for the life of the quote (15 minutes by default): the order placed from it
pays the quoted prices even if an offer's price changes meanwhile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from .. import audit
from ..accounts import service as accounts
from ..accounts.models import Role
from ..accounts.service import Principal, require_role
from ..budgets import rules as budget_rules
from ..budgets import service as budgets
from ..catalog import service as catalog
from ..catalog.models import Offer, OfferStatus
from ..db import utcnow
from ..errors import NotFound, ValidationFailed
from ..money import format_gbp, unit_price, vat_pence
from ..pricing import service as pricing
from ..pricing.schemas import PriceCheckSchema
from .models import PaymentMethod, Quote, QuoteLine

QUOTE_LIFETIME = timedelta(minutes=15)
MAX_LINES = 200
MAX_QUANTITY = 1_000_000

# Which roles may pay which way.
PAYMENT_ROLES: dict[PaymentMethod, tuple[Role, ...]] = {
    PaymentMethod.PURCHASE_ORDER: (Role.BUYER,),
    PaymentMethod.CARD: (Role.BUYER, Role.BUDGET_HOLDER),
    PaymentMethod.BUDGET: (Role.BUDGET_HOLDER, Role.BUDGET_MANAGER, Role.BUYER, Role.SUPPLIER),
}


@dataclass(frozen=True)
class BasketLine:
    offer_id: str
    quantity: int


def _problem(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message}


def _line_problems(offer: Offer, quantity: int) -> list[dict[str, str]]:
    problems = []
    if offer.status != OfferStatus.ACTIVE:
        problems.append(_problem("offer-paused", "The supplier has paused this offer."))
    if quantity < offer.min_order_qty:
        problems.append(
            _problem(
                "below-minimum-order-quantity",
                f"The minimum order is {offer.min_order_qty} packs; you asked for {quantity}.",
            )
        )
    if quantity > offer.stock:
        problems.append(
            _problem(
                "insufficient-stock",
                f"Only {offer.stock} packs are in stock; you asked for {quantity}.",
            )
        )
    return problems


_PRICE_CHECK = PriceCheckSchema()


def _price_checks(
    session: Session, lines: Sequence[QuoteLine]
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Each line's price-variance verdict and, when another offer for the same product is
    cheaper per unit, that offer with a sentence a buyer understands: for the whole basket in
    a fixed number of queries."""
    verdicts = pricing.price_verdicts(
        session, [(line.product_id, line.unit_price_pence) for line in lines]
    )
    summaries = []
    for line, verdict in zip(lines, verdicts, strict=True):
        summary = _PRICE_CHECK.dump(verdict.as_dict())
        cheaper = summary.pop("cheaper_offer", None)
        summaries.append(
            (summary, None if cheaper and cheaper["offer_id"] == line.offer_id else cheaper)
        )
    suppliers = accounts.organisations_by_id(
        session, [cheaper["supplier_id"] for _, cheaper in summaries if cheaper]
    )
    for _, cheaper in summaries:
        if cheaper:
            supplier = suppliers[cheaper["supplier_id"]].name
            cheaper["supplier_name"] = supplier
            cheaper["message"] = (
                f"A cheaper offer for the same product exists: offer {cheaper['offer_id']} "
                f"from {supplier} at {format_gbp(cheaper['pack_price_pence'])} a pack."
            )
    return summaries


def _validate_basket(lines: Sequence[BasketLine]) -> None:
    if not lines:
        raise ValidationFailed(
            "The basket is empty.", errors={"lines": ["Give at least one line."]}
        )
    if len(lines) > MAX_LINES:
        raise ValidationFailed(
            "The basket is too large.", errors={"lines": [f"At most {MAX_LINES} lines."]}
        )
    seen: set[str] = set()
    for index, line in enumerate(lines):
        if line.quantity < 1 or line.quantity > MAX_QUANTITY:
            raise ValidationFailed(
                "A quantity is out of range.",
                errors={f"lines.{index}.quantity": ["1 to 1,000,000 packs."]},
            )
        if line.offer_id in seen:
            raise ValidationFailed(
                "An offer appears twice.",
                errors={f"lines.{index}.offer_id": ["Put each offer on one line."]},
            )
        seen.add(line.offer_id)


def _price_line(position: int, offer: Offer, quantity: int) -> QuoteLine:
    product = offer.product
    pack_price = catalog.price_for_quantity(offer, quantity)
    net = pack_price * quantity
    vat = vat_pence(net, offer.vat_rate_percent)
    return QuoteLine(
        position=position,
        offer_id=offer.id,
        product_id=product.id,
        supplier_id=offer.supplier_id,
        quantity=quantity,
        units_per_pack=product.units_per_pack,
        pack_price_pence=pack_price,
        unit_price_pence=unit_price(pack_price, product.units_per_pack),
        vat_rate_percent=offer.vat_rate_percent,
        net_pence=net,
        vat_pence=vat,
        gross_pence=net + vat,
        lead_time_days=offer.lead_time_days,
        problems=_line_problems(offer, quantity),
    )


def create_quote(
    session: Session,
    actor: Principal,
    *,
    lines: Sequence[BasketLine],
    payment_method: PaymentMethod | str,
    budget_id: str | None = None,
    card_top_up: bool = False,
    now: datetime | None = None,
) -> Quote:
    method = PaymentMethod(payment_method)
    require_role(actor, *PAYMENT_ROLES[method])
    _validate_basket(lines)
    budget = _budget_for(session, actor, method, budget_id, card_top_up)
    now = now or utcnow()
    quote = Quote(
        created_by=actor.user_id,
        organisation_id=actor.organisation_id,
        payment_method=method,
        budget_id=budget.id if budget else None,
        card_top_up=card_top_up,
        created_at=now,
        expires_at=now + QUOTE_LIFETIME,
        net_pence=0,
        vat_pence=0,
        gross_pence=0,
    )
    offers = _basket_offers(session, lines)
    priced = [
        _price_line(position, offers[basket_line.offer_id], basket_line.quantity)
        for position, basket_line in enumerate(lines, start=1)
    ]
    for line, (verdict, cheaper) in zip(priced, _price_checks(session, priced), strict=True):
        line.price_verdict, line.cheaper_offer = verdict, cheaper
        quote.lines.append(line)
    quote.net_pence = sum(line.net_pence for line in quote.lines)
    quote.vat_pence = sum(line.vat_pence for line in quote.lines)
    quote.gross_pence = quote.net_pence + quote.vat_pence
    quote.orderable = not any(line.problems for line in quote.lines)
    _apply_payment_split(session, quote, budget)
    session.add(quote)
    session.flush()
    audit.record(
        session,
        actor,
        "quote.create",
        "quote",
        quote.id,
        after={
            "gross_pence": quote.gross_pence,
            "payment_method": method,
            "lines": len(quote.lines),
        },
    )
    return quote


def _basket_offers(session: Session, lines: Sequence[BasketLine]) -> dict[str, Offer]:
    # A paused offer is quoted with a line problem (the buyer's basket may be older than the
    # pause), so look offers up whatever their status.
    offers = catalog.offers_by_id(session, [line.offer_id for line in lines])
    for index, line in enumerate(lines):
        if line.offer_id not in offers:
            raise ValidationFailed(
                "An offer in the basket does not exist.",
                errors={f"lines.{index}.offer_id": [f"No offer {line.offer_id!r}."]},
            )
    return offers


def _budget_for(
    session: Session,
    actor: Principal,
    method: PaymentMethod,
    budget_id: str | None,
    card_top_up: bool,
):
    if method != PaymentMethod.BUDGET:
        if budget_id or card_top_up:
            raise ValidationFailed(
                "A budget and a card top-up go with the budget payment method.",
                errors={"budget_id": ["Only with payment_method=budget."]},
            )
        return None
    if not budget_id:
        raise ValidationFailed(
            "Say which budget pays.", errors={"budget_id": ["Required for budget payments."]}
        )
    budget = budgets.get_budget(session, actor, budget_id)
    budgets.require_can_spend(actor, budget)
    if card_top_up and not budget.top_up_allowed:
        raise ValidationFailed(
            "This budget's plan does not allow a card top-up.",
            errors={"card_top_up": ["Not allowed for this budget."]},
        )
    return budget


def spend_items(quote: Quote) -> list[budget_rules.SpendItem]:
    return [
        budget_rules.SpendItem(amount_pence=line.gross_pence, offer_id=line.offer_id, ref=line.id)
        for line in quote.lines
    ]


def _apply_payment_split(session: Session, quote: Quote, budget: Any) -> None:
    if budget is None:
        quote.card_pence = quote.gross_pence if quote.payment_method == PaymentMethod.CARD else 0
        return
    check = budget_rules.check_spend(session, budget, spend_items(quote))
    quote.budget_check = check_summary(check)
    by_ref = {decision.item.ref: decision for decision in check.items}
    for line in quote.lines:
        decision = by_ref[line.id]
        line.budget_check = {
            "verdict": decision.verdict,
            "plan_line_id": decision.plan_line.id if decision.plan_line else None,
            "budget_pence": decision.budget_pence,
            "top_up_pence": decision.top_up_pence,
            "reasons": [r.as_dict() for r in decision.reasons],
        }
    top_up = check.top_up_pence if quote.card_top_up else 0
    quote.card_pence = top_up
    quote.budget_pence = quote.gross_pence - top_up


def check_summary(check: Any) -> dict[str, Any]:
    return {
        "verdict": check.verdict,
        "total_pence": check.total_pence,
        "budget_pence": check.budget_pence,
        "top_up_pence": check.top_up_pence,
        "reasons": [r.as_dict() for r in check.reasons],
    }


def get_quote(session: Session, actor: Principal, quote_id: str) -> Quote:
    quote = session.get(Quote, quote_id)
    if quote is None or quote.created_by != actor.user_id:
        raise NotFound(f"No quote with id {quote_id!r} is visible to you.", code="quote-not-found")
    return quote
