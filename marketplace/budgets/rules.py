"""The spending rules (DESIGN §7) in one function, ``check_spend``, used by quotes and orders.

Each item gets a verdict and at least one reason (a ``code`` and a sentence for the budget
holder); the basket's verdict is the worst of them. Refused: ``category-excluded`` (the category
or an ancestor is ``phb_excluded``, whatever the plan says), ``budget-not-active``,
``outside-budget-period``, ``exceeds-plan-line`` (and no top-up possible),
``exceeds-budget-available``. Needs approval: ``outside-care-plan``,
``above-approval-threshold``, and the basket-level ``basket-above-approval-threshold``.
Allowed: ``top-up-required`` (over the plan line on a budget that allows top-up: the budget
pays what is left, the holder ``top_up_pence`` by card) and ``within-plan``. docs/budgets.md
has the full table.

Items are checked in order against running totals, so two items that each fit but together do
not are caught. Amounts are whatever the caller will charge (the API's ``/check`` prices offers
VAT-inclusive from the catalogue).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..catalog import service as catalog
from ..catalog.models import Category
from ..db import utcnow
from ..errors import ValidationFailed
from ..money import format_gbp
from .models import Budget, BudgetStatus, PlanLine

ALLOWED = "allowed"
NEEDS_APPROVAL = "needs_approval"
REFUSED = "refused"
_SEVERITY = {ALLOWED: 0, NEEDS_APPROVAL: 1, REFUSED: 2}


@dataclass(frozen=True)
class SpendItem:
    """One thing to buy. Give the amount and one of category, product or offer."""

    amount_pence: int
    category_id: str | None = None
    product_id: str | None = None
    offer_id: str | None = None
    plan_line_id: str | None = None  # charge this plan line (must cover the category)
    ref: str | None = None  # the caller's own line reference, echoed back


@dataclass(frozen=True)
class Reason:
    code: str
    verdict: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "verdict": self.verdict, "message": self.message}


@dataclass
class ItemDecision:
    index: int
    item: SpendItem
    category: Category
    plan_line: PlanLine | None
    verdict: str = ALLOWED
    reasons: list[Reason] = field(default_factory=list)
    budget_pence: int = 0
    top_up_pence: int = 0

    def add(self, code: str, verdict: str, message: str) -> None:
        self.reasons.append(Reason(code, verdict, message))
        if _SEVERITY[verdict] > _SEVERITY[self.verdict]:
            self.verdict = verdict


@dataclass
class SpendCheck:
    budget: Budget
    verdict: str
    items: list[ItemDecision]
    reasons: list[Reason]  # about the basket as a whole
    total_pence: int
    budget_pence: int
    top_up_pence: int

    @property
    def allowed(self) -> bool:
        return self.verdict == ALLOWED

    def all_reasons(self) -> list[dict[str, Any]]:
        """Every reason, flattened (what an approval request stores)."""
        out = [{"item": None, **r.as_dict()} for r in self.reasons]
        for d in self.items:
            out.extend({"item": d.index, **r.as_dict()} for r in d.reasons)
        return out


def _coerce(item: SpendItem | Mapping[str, Any], index: int) -> SpendItem:
    if isinstance(item, SpendItem):
        spend = item
    else:
        known = set(SpendItem.__dataclass_fields__)
        unknown = set(item) - known
        if unknown:
            raise ValidationFailed(
                "Unknown item fields.", errors={str(index): [f"Unknown: {sorted(unknown)}"]}
            )
        spend = SpendItem(**item)
    amount = spend.amount_pence
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise ValidationFailed(
            "Every item needs a positive whole number of pence.",
            errors={str(index): {"amount_pence": ["Must be a positive integer."]}},
        )
    if not (spend.category_id or spend.product_id or spend.offer_id):
        raise ValidationFailed(
            "Every item needs a category, a product or an offer.",
            errors={str(index): ["Give category_id, product_id or offer_id."]},
        )
    return spend


def _category_of(session: Session, item: SpendItem) -> Category:
    if item.offer_id:
        category_id = catalog.get_offer(session, item.offer_id).product.category_id
    elif item.product_id:
        category_id = catalog.get_product(session, item.product_id).category_id
    else:
        category_id = item.category_id
    category = session.get(Category, category_id)
    if category is None:
        raise ValidationFailed(
            f"No category with id {category_id!r}.",
            code="category-not-found",
            errors={"category_id": ["Unknown category."]},
        )
    return category


def path_codes(category: Category) -> list[str]:
    return [code for code in category.path.split("/") if code]


class _Tree:
    """Lookups on the category tree for one check (each category read once)."""

    def __init__(self, session: Session):
        self.session = session
        self._excluded: dict[str, Category | None] = {}

    def excluded_by(self, category: Category) -> Category | None:
        """The category itself or the nearest ancestor flagged ``phb_excluded``."""
        if category.path not in self._excluded:
            flagged = {
                c.code: c
                for c in self.session.scalars(
                    select(Category).where(
                        Category.code.in_(path_codes(category)), Category.phb_excluded.is_(True)
                    )
                )
            }
            nearest = next(
                (flagged[c] for c in reversed(path_codes(category)) if c in flagged), None
            )
            self._excluded[category.path] = nearest
        return self._excluded[category.path]


def covering_depth(line: PlanLine, category: Category) -> int:
    """How specifically a plan line covers a category: the depth of its deepest category that is
    the category itself or an ancestor of it; 0 when it does not cover it."""
    return max(
        (len(path_codes(c)) for c in line.categories if category.path.startswith(c.path)),
        default=0,
    )


def _pick_line(
    lines: list[PlanLine], category: Category, wanted: str | None, remaining: dict[str, int]
) -> PlanLine | None:
    if wanted is not None:
        line = next((pl for pl in lines if pl.id == wanted), None)
        if line is None:
            raise ValidationFailed(
                "That plan line is not part of this budget.",
                code="plan-line-not-found",
                errors={"plan_line_id": [f"No plan line {wanted!r} on this budget."]},
            )
        return line if covering_depth(line, category) else None
    covering = [(covering_depth(pl, category), remaining[pl.id], pl.id, pl) for pl in lines]
    covering = [c for c in covering if c[0] > 0]
    if not covering:
        return None
    # The most specific line first; among equals the one with the most left.
    return max(covering, key=lambda c: (c[0], c[1], c[2]))[3]


def check_spend(
    session: Session,
    budget: Budget,
    items: Iterable[SpendItem | Mapping[str, Any]],
    *,
    today: date | None = None,
) -> SpendCheck:
    """Would this basket be allowed on this budget? Reads only; moves no money."""
    spend_items = [_coerce(item, i) for i, item in enumerate(items)]
    if not spend_items:
        raise ValidationFailed(
            "The basket is empty.", errors={"items": ["Give at least one item."]}
        )
    today = today or utcnow().date()
    session.refresh(budget)
    lines = list(budget.plan_lines)
    for line in lines:
        session.refresh(line)
    remaining = {line.id: line.remaining_pence for line in lines}
    available = budget.available_pence
    threshold = budget.approval_threshold_pence
    tree = _Tree(session)
    decisions: list[ItemDecision] = []

    for index, item in enumerate(spend_items):
        category = _category_of(session, item)
        line = _pick_line(lines, category, item.plan_line_id, remaining)
        d = ItemDecision(index=index, item=item, category=category, plan_line=line)
        amount = item.amount_pence

        excluded = tree.excluded_by(category)
        if excluded is not None:
            d.add(
                "category-excluded",
                REFUSED,
                f"{category.name} can never be bought with a personal health budget "
                f"({excluded.name}), whatever the care plan says.",
            )
        if budget.status != BudgetStatus.ACTIVE:
            d.add(
                "budget-not-active",
                REFUSED,
                f"Your budget is {budget.status.value}, so nothing can be bought with it at the "
                "moment. Your budget manager can tell you why.",
            )
        elif not budget.period_start <= today <= budget.period_end:
            d.add(
                "outside-budget-period",
                REFUSED,
                f"Your budget can be spent from {budget.period_start:%d %B %Y} to "
                f"{budget.period_end:%d %B %Y}; today is outside that period.",
            )
        if line is None and excluded is None:
            d.add(
                "outside-care-plan",
                NEEDS_APPROVAL,
                f"{category.name} is not part of your care plan, so your budget manager needs "
                "to approve it first.",
            )
        if amount > threshold:
            d.add(
                "above-approval-threshold",
                NEEDS_APPROVAL,
                f"This item costs {format_gbp(amount)}, more than the {format_gbp(threshold)} "
                "you can spend without your budget manager's approval.",
            )

        budget_part = amount
        if line is not None and amount > remaining[line.id]:
            can_pay = min(remaining[line.id], available)
            if budget.top_up_allowed and can_pay > 0:
                budget_part = can_pay
                d.top_up_pence = amount - can_pay
                d.add(
                    "top-up-required",
                    ALLOWED,
                    f"Your plan has {format_gbp(can_pay)} left for '{line.description}'; "
                    f"your budget allows you to pay the other {format_gbp(d.top_up_pence)} "
                    "yourself by card.",
                )
            else:
                d.add(
                    "exceeds-plan-line",
                    REFUSED,
                    f"This costs {format_gbp(amount)} but only "
                    f"{format_gbp(max(remaining[line.id], 0))} is left for "
                    f"'{line.description}' in your care plan.",
                )
        if budget_part > available and not any(r.code == "exceeds-plan-line" for r in d.reasons):
            d.add(
                "exceeds-budget-available",
                REFUSED,
                f"This costs {format_gbp(budget_part)} but your budget has "
                f"{format_gbp(max(available, 0))} available.",
            )
        if not d.reasons:
            d.add(
                "within-plan",
                ALLOWED,
                f"Covered by your care plan ('{line.description}'), with "
                f"{format_gbp(remaining[line.id] - amount)} left on that line afterwards.",
            )
        if d.verdict == REFUSED:
            d.top_up_pence = 0
        else:
            d.budget_pence = budget_part
            available -= budget_part
            if line is not None:
                remaining[line.id] -= budget_part
        decisions.append(d)

    total = sum(i.amount_pence for i in spend_items)
    basket: list[Reason] = []
    if total > threshold and len(spend_items) > 1:
        basket.append(
            Reason(
                "basket-above-approval-threshold",
                NEEDS_APPROVAL,
                f"Together these cost {format_gbp(total)}, more than the {format_gbp(threshold)} "
                "you can spend without your budget manager's approval.",
            )
        )
    verdict = max(
        [d.verdict for d in decisions] + [r.verdict for r in basket], key=_SEVERITY.__getitem__
    )
    return SpendCheck(
        budget=budget,
        verdict=verdict,
        items=decisions,
        reasons=basket,
        total_pence=total,
        budget_pence=sum(d.budget_pence for d in decisions),
        top_up_pence=sum(d.top_up_pence for d in decisions),
    )
