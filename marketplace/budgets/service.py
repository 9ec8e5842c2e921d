"""Personal health budgets: who may see and spend them, setting them up, their life cycle,
statements and the commissioner's spend report. Money moves only in ``budgets.ledger``; the
spending rules are ``budgets.rules.check_spend``; approvals are ``budgets.approvals``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.orm import Session, selectinload

from .. import audit
from ..accounts.models import Role, User
from ..accounts.service import Principal, get_organisation
from ..catalog.models import Category
from ..db import utcnow
from ..errors import Conflict, Forbidden, NotFound, ValidationFailed, not_found
from . import ledger
from .models import (
    BALANCE_FIELDS,
    Budget,
    BudgetStatus,
    EntryType,
    LedgerEntry,
    ManagementType,
    PlanLine,
    PlanLineCategory,
    entry_effect,
)
from .rules import SpendItem

BUDGET_FIELDS = (
    "reference",
    "holder_user_id",
    "representative_user_id",
    "commissioner_id",
    "management_type",
    "managing_organisation_id",
    "period_start",
    "period_end",
    "status",
    "status_reason",
    "approval_threshold_pence",
    "top_up_allowed",
)
BUDGET_ROLES = (Role.BUDGET_HOLDER, Role.BUDGET_MANAGER)


# --- who may see, manage and spend ---------------------------------------------------------------


def can_spend(actor: Principal, budget: Budget) -> bool:
    """The one rule for who may spend a budget (place holds, i.e. order with it):

    - ``direct_payment``: the holder, or their nominated representative;
    - ``third_party``: users of the managing organisation;
    - ``notional``: the commissioner's budget managers (they buy on the person's behalf).
    """
    if actor.user_id is None:
        return False
    if budget.management_type == ManagementType.DIRECT_PAYMENT:
        return actor.user_id in (budget.holder_user_id, budget.representative_user_id)
    if budget.management_type == ManagementType.THIRD_PARTY:
        return (
            budget.managing_organisation_id is not None
            and actor.organisation_id == budget.managing_organisation_id
        )
    return actor.role == Role.BUDGET_MANAGER and actor.organisation_id == budget.commissioner_id


def require_can_spend(actor: Principal, budget: Budget) -> None:
    if not can_spend(actor, budget):
        who = {
            ManagementType.DIRECT_PAYMENT: "the budget holder or their representative",
            ManagementType.THIRD_PARTY: "the organisation that manages it",
            ManagementType.NOTIONAL: "the commissioner's budget managers",
        }[budget.management_type]
        raise Forbidden(
            f"This is a {budget.management_type.value.replace('_', ' ')} budget: only {who} "
            "may spend it.",
            code="not-allowed-to-spend",
        )


def visible_budgets(actor: Principal) -> Select[tuple[Budget]]:
    """Budgets the actor may see: holders their own (or one they represent); managers their
    commissioner's, and third-party budgets their organisation manages. Other roles: 403."""
    stmt = select(Budget)
    if actor.role == Role.BUDGET_HOLDER:
        return stmt.where(
            or_(
                Budget.holder_user_id == actor.user_id,
                Budget.representative_user_id == actor.user_id,
            )
        )
    if actor.role == Role.BUDGET_MANAGER:
        return stmt.where(
            or_(
                Budget.commissioner_id == actor.organisation_id,
                Budget.managing_organisation_id == actor.organisation_id,
            )
        )
    raise Forbidden(
        "Personal health budgets are for budget holders and budget managers.", code="wrong-role"
    )


def get_budget(session: Session, actor: Principal, budget_id: str) -> Budget:
    budget = session.scalar(visible_budgets(actor).where(Budget.id == budget_id))
    if budget is None:
        raise not_found("budget", budget_id)
    return budget


def require_manager(actor: Principal, budget: Budget) -> None:
    """Set-up, allocations, adjustments, status changes and approvals: the commissioner's
    budget managers only."""
    if actor.role != Role.BUDGET_MANAGER or actor.organisation_id != budget.commissioner_id:
        raise Forbidden(
            "Only the commissioner's budget managers can change this budget.",
            code="not-budget-manager",
        )


# --- set-up ---------------------------------------------------------------------------------------


def _holder(session: Session, user_id: str, commissioner_id: str, field_name: str) -> User:
    user = session.get(User, user_id)
    if (
        user is None
        or user.role != Role.BUDGET_HOLDER
        or user.organisation_id != commissioner_id
        or not user.is_active
    ):
        raise ValidationFailed(
            "The budget is not valid.",
            errors={field_name: ["Not an active budget holder of your commissioner."]},
        )
    return user


def _categories(session: Session, codes: Iterable[str]) -> list[Category]:
    codes = [str(c).strip() for c in codes]
    if not codes:
        raise ValidationFailed(
            "A plan line covers at least one category.",
            errors={"category_codes": ["Give at least one category code."]},
        )
    found = {c.code: c for c in session.scalars(select(Category).where(Category.code.in_(codes)))}
    missing = [c for c in codes if c not in found]
    if missing:
        raise ValidationFailed(
            "Unknown category codes.",
            code="category-not-found",
            errors={"category_codes": [f"Unknown: {', '.join(missing)}"]},
        )
    excluded = [c for c in found.values() if c.phb_excluded]
    if excluded:
        raise ValidationFailed(
            "A care plan can never cover categories excluded from personal health budgets.",
            code="category-excluded",
            errors={"category_codes": [f"Excluded: {', '.join(c.code for c in excluded)}"]},
        )
    return list({c.id: c for c in found.values()}.values())


def create_budget(
    session: Session,
    actor: Principal,
    *,
    holder_id: str,
    management_type: ManagementType | str,
    period_start: date,
    period_end: date,
    approval_threshold_pence: int,
    top_up_allowed: bool = False,
    representative_id: str | None = None,
    managing_organisation_id: str | None = None,
    reference: str | None = None,
    allocation_pence: int = 0,
    plan_lines: Iterable[Mapping[str, Any]] = (),
) -> Budget:
    """A budget for one of the manager's commissioner's budget holders, with its opening
    allocation (unassigned) and care-plan lines (each allocated its amount)."""
    if actor.role != Role.BUDGET_MANAGER or actor.organisation_id is None:
        raise Forbidden("Only budget managers create budgets.", code="wrong-role")
    commissioner_id = actor.organisation_id
    management_type = ManagementType(management_type)
    errors: dict[str, list[str]] = {}
    if period_end < period_start:
        errors["period_end"] = ["Must be on or after period_start."]
    if isinstance(approval_threshold_pence, bool) or approval_threshold_pence < 0:
        errors["approval_threshold_pence"] = ["Must be zero or more."]
    if management_type == ManagementType.THIRD_PARTY and not managing_organisation_id:
        errors["managing_organisation_id"] = [
            "A third-party budget names its managing organisation."
        ]
    if management_type != ManagementType.THIRD_PARTY and managing_organisation_id:
        errors["managing_organisation_id"] = ["Only third-party budgets have one."]
    if representative_id and representative_id == holder_id:
        errors["representative_id"] = ["The representative is someone other than the holder."]
    reference = (reference or "").strip() or None
    if errors:
        raise ValidationFailed("The budget is not valid.", errors=errors)
    _holder(session, holder_id, commissioner_id, "holder_id")
    if representative_id:
        _holder(session, representative_id, commissioner_id, "representative_id")
    if managing_organisation_id:
        try:
            get_organisation(session, managing_organisation_id)
        except NotFound:
            raise ValidationFailed(
                "The budget is not valid.",
                errors={"managing_organisation_id": ["No such organisation."]},
            ) from None
    if reference and session.scalar(
        select(Budget.id).where(
            Budget.commissioner_id == commissioner_id, Budget.reference == reference
        )
    ):
        raise Conflict(f"A budget with reference {reference!r} exists.", code="duplicate-reference")

    budget = Budget(
        reference=reference,
        holder_user_id=holder_id,
        representative_user_id=representative_id,
        commissioner_id=commissioner_id,
        management_type=management_type,
        managing_organisation_id=managing_organisation_id,
        period_start=period_start,
        period_end=period_end,
        status=BudgetStatus.ACTIVE,
        approval_threshold_pence=approval_threshold_pence,
        top_up_allowed=bool(top_up_allowed),
        entry_count=0,
        **dict.fromkeys(BALANCE_FIELDS, 0),
    )
    session.add(budget)
    session.flush()
    audit.record(
        session,
        actor,
        "budget.create",
        "budget",
        budget.id,
        after=audit.snapshot(budget, BUDGET_FIELDS),
    )
    if allocation_pence:
        ledger.allocate(session, actor, budget, allocation_pence, reason="Opening allocation")
    for line in plan_lines:
        add_plan_line(session, actor, budget, **line)
    session.refresh(budget)
    return budget


def add_plan_line(
    session: Session,
    actor: Principal,
    budget: Budget,
    *,
    description: str,
    category_codes: Iterable[str],
    amount_pence: int = 0,
) -> PlanLine:
    """A care-plan line: the agreed outcome, the categories it covers (with their descendants)
    and the money allocated to it (an allocation entry on the ledger)."""
    require_manager(actor, budget)
    if budget.status == BudgetStatus.CLOSED:
        raise Conflict("This budget is closed.", code="budget-closed")
    description = (description or "").strip()
    if not description or len(description) > 1000:
        raise ValidationFailed(
            "The plan line is not valid.",
            errors={"description": ["Describe the agreed outcome (1 to 1000 characters)."]},
        )
    categories = _categories(session, category_codes)
    line = PlanLine(
        budget_id=budget.id, description=description, **dict.fromkeys(BALANCE_FIELDS, 0)
    )
    session.add(line)
    session.flush()
    session.add_all(PlanLineCategory(plan_line_id=line.id, category_id=c.id) for c in categories)
    session.flush()
    audit.record(
        session,
        actor,
        "budget.plan_line.create",
        "budget",
        budget.id,
        after={
            "plan_line_id": line.id,
            "description": description,
            "category_codes": sorted(c.code for c in categories),
        },
    )
    if amount_pence:
        ledger.allocate(
            session,
            actor,
            budget,
            amount_pence,
            plan_line_id=line.id,
            reason="Care-plan allocation",
        )
    session.refresh(line)
    session.expire(budget, ["plan_lines"])
    return line


# --- life cycle --------------------------------------------------------------------------------

_TRANSITIONS = {  # action: (from, to, past tense)
    "suspend": ((BudgetStatus.ACTIVE,), BudgetStatus.SUSPENDED, "suspended"),
    "reactivate": ((BudgetStatus.SUSPENDED,), BudgetStatus.ACTIVE, "reactivated"),
    "close": ((BudgetStatus.ACTIVE, BudgetStatus.SUSPENDED), BudgetStatus.CLOSED, "closed"),
}


def change_status(
    session: Session, actor: Principal, budget: Budget, action: str, reason: str
) -> Budget:
    """suspend (active → suspended), reactivate (suspended → active), close (active or
    suspended → closed, only with no open holds). One guarded UPDATE, so two managers acting
    at once cannot both win, and a hold racing a suspension either lands first or is refused."""
    require_manager(actor, budget)
    sources, target, done = _TRANSITIONS[action]
    reason = ledger.clean_reason(reason, required=True)
    before = audit.snapshot(budget, ("status", "status_reason"))
    stmt = update(Budget).where(Budget.id == budget.id, Budget.status.in_(sources))
    if target == BudgetStatus.CLOSED:
        stmt = stmt.where(Budget.held_pence == 0)
    result = session.execute(
        stmt.values(status=target, status_reason=reason, updated_at=utcnow()).execution_options(
            synchronize_session=False
        )
    )
    session.refresh(budget)
    if result.rowcount != 1:
        if budget.status in sources and target == BudgetStatus.CLOSED:
            raise Conflict(
                "This budget still has money on hold for orders in progress; settle them "
                "before closing it.",
                code="budget-has-open-holds",
                held_pence=budget.held_pence,
            )
        raise Conflict(
            f"A {budget.status.value} budget cannot be {done}.",
            code="invalid-status-change",
            budget_status=budget.status.value,
        )
    audit.record(
        session,
        actor,
        f"budget.{action}",
        "budget",
        budget.id,
        before=before,
        after=audit.snapshot(budget, ("status", "status_reason")),
    )
    return budget


def list_budgets(
    actor: Principal,
    *,
    status: BudgetStatus | None = None,
    management_type: ManagementType | None = None,
    holder_id: str | None = None,
) -> Select[tuple[Budget]]:
    stmt = visible_budgets(actor).options(
        selectinload(Budget.holder), selectinload(Budget.representative)
    )
    if status is not None:
        stmt = stmt.where(Budget.status == status)
    if management_type is not None:
        stmt = stmt.where(Budget.management_type == management_type)
    if holder_id:
        stmt = stmt.where(Budget.holder_user_id == holder_id)
    return stmt


def ledger_entries(budget: Budget, *, entry_type: EntryType | None = None) -> Select:
    stmt = select(LedgerEntry).where(LedgerEntry.budget_id == budget.id)
    if entry_type is not None:
        stmt = stmt.where(LedgerEntry.entry_type == entry_type)
    return stmt


# --- statements ----------------------------------------------------------------------------------


@dataclass
class StatementLine:
    entry: LedgerEntry
    effect_pence: int
    balance_pence: int


@dataclass
class Statement:
    budget: Budget
    date_from: date
    date_to: date
    opening_balance_pence: int
    closing_balance_pence: int
    lines: list[StatementLine]
    totals: dict[str, int] = field(default_factory=dict)  # entry type -> sum of amounts
    generated_at: datetime = field(default_factory=utcnow)


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def statement(
    session: Session, budget: Budget, date_from: date | None = None, date_to: date | None = None
) -> Statement:
    """Opening balance (available at the start of ``date_from``), every entry up to the end of
    ``date_to`` (UTC days, inclusive) with its effect and the running balance, and the closing
    balance. Opening + the entries' effects = closing, always."""
    today = utcnow().date()
    date_from = date_from or budget.period_start
    date_to = date_to or min(max(today, date_from), budget.period_end)
    if date_to < date_from:
        raise ValidationFailed(
            "The statement period is not valid.", errors={"to": ["Must be on or after from."]}
        )
    if (date_to - date_from).days > 366 * 10:
        raise ValidationFailed(
            "A statement covers at most ten years.",
            errors={"to": ["At most ten years after from."]},
        )
    start, end = _day_start(date_from), _day_start(date_to + timedelta(days=1))
    opening = 0
    for entry_type, amount in session.execute(
        select(LedgerEntry.entry_type, func.sum(LedgerEntry.amount_pence))
        .where(LedgerEntry.budget_id == budget.id, LedgerEntry.created_at < start)
        .group_by(LedgerEntry.entry_type)
    ):
        opening += entry_effect(entry_type, int(amount))
    balance = opening
    lines: list[StatementLine] = []
    totals: dict[str, int] = defaultdict(int)
    for entry in session.scalars(
        select(LedgerEntry)
        .where(
            LedgerEntry.budget_id == budget.id,
            LedgerEntry.created_at >= start,
            LedgerEntry.created_at < end,
        )
        .order_by(LedgerEntry.seq)
    ):
        balance += entry.effect_pence
        totals[entry.entry_type.value] += entry.amount_pence
        lines.append(
            StatementLine(entry=entry, effect_pence=entry.effect_pence, balance_pence=balance)
        )
    return Statement(
        budget=budget,
        date_from=date_from,
        date_to=date_to,
        opening_balance_pence=opening,
        closing_balance_pence=balance,
        lines=lines,
        totals={t.value: totals.get(t.value, 0) for t in EntryType},
    )


STATEMENT_CSV_COLUMNS = (
    "date_time",
    "entry_id",
    "entry_type",
    "plan_line",
    "category_code",
    "order_ref",
    "reason",
    "amount_pence",
    "effect_pence",
    "balance_pence",
)


def statement_rows(stmt: Statement) -> list[dict[str, Any]]:
    """The statement as CSV rows: an opening-balance row, one row per entry, a closing row."""
    rows: list[dict[str, Any]] = [
        {
            "date_time": _day_start(stmt.date_from).isoformat(),
            "entry_type": "opening_balance",
            "balance_pence": stmt.opening_balance_pence,
        }
    ]
    for line in stmt.lines:
        e = line.entry
        rows.append(
            {
                "date_time": e.created_at.isoformat(),
                "entry_id": e.id,
                "entry_type": e.entry_type.value,
                "plan_line": e.plan_line.description if e.plan_line else "",
                "category_code": e.category.code if e.category else "",
                "order_ref": e.order_ref or "",
                "reason": e.reason or "",
                "amount_pence": e.amount_pence,
                "effect_pence": line.effect_pence,
                "balance_pence": line.balance_pence,
            }
        )
    rows.append(
        {
            "date_time": _day_start(stmt.date_to + timedelta(days=1)).isoformat(),
            "entry_type": "closing_balance",
            "balance_pence": stmt.closing_balance_pence,
        }
    )
    return rows


# --- the commissioner's report -------------------------------------------------------------------


@dataclass
class SpendReport:
    commissioner_id: str
    date_from: date | None
    date_to: date | None
    by_category: list[dict[str, Any]]
    by_management_type: list[dict[str, Any]]
    totals: dict[str, int]


FLOW_FIELDS = ("allocated_pence", "adjusted_pence", "captured_pence", "refunded_pence")
_FLOW_OF = {
    EntryType.ALLOCATION: "allocated_pence",
    EntryType.ADJUSTMENT: "adjusted_pence",
    EntryType.CAPTURE: "captured_pence",
    EntryType.REFUND: "refunded_pence",
}


def spend_report(
    session: Session, actor: Principal, date_from: date | None = None, date_to: date | None = None
) -> SpendReport:
    """Spend (captures less refunds) by category and by management type across every budget of
    the manager's commissioner, for entries dated within [from, to] (all time by default), and
    the budgets' balances now."""
    if actor.role != Role.BUDGET_MANAGER or actor.organisation_id is None:
        raise Forbidden("The spend report is for budget managers.", code="wrong-role")
    if date_from and date_to and date_to < date_from:
        raise ValidationFailed(
            "The period is not valid.", errors={"to": ["Must be on or after from."]}
        )
    org = actor.organisation_id
    window = [Budget.commissioner_id == org]
    if date_from:
        window.append(LedgerEntry.created_at >= _day_start(date_from))
    if date_to:
        window.append(LedgerEntry.created_at < _day_start(date_to + timedelta(days=1)))

    categories: dict[str | None, dict[str, Any]] = {}
    for category_id, code, name, entry_type, amount, count in session.execute(
        select(
            LedgerEntry.category_id,
            Category.code,
            Category.name,
            LedgerEntry.entry_type,
            func.sum(LedgerEntry.amount_pence),
            func.count(),
        )
        .join(Budget, Budget.id == LedgerEntry.budget_id)
        .outerjoin(Category, Category.id == LedgerEntry.category_id)
        .where(*window, LedgerEntry.entry_type.in_([EntryType.CAPTURE, EntryType.REFUND]))
        .group_by(LedgerEntry.category_id, Category.code, Category.name, LedgerEntry.entry_type)
    ):
        row = categories.setdefault(
            category_id,
            {
                "category_id": category_id,
                "category_code": code,
                "category_name": name or "Not categorised",
                "captured_pence": 0,
                "refunded_pence": 0,
                "captures": 0,
            },
        )
        row[_FLOW_OF[entry_type]] += int(amount)
        if entry_type == EntryType.CAPTURE:
            row["captures"] += count
    for row in categories.values():
        row["spent_pence"] = row["captured_pence"] - row["refunded_pence"]
    by_category = sorted(
        categories.values(), key=lambda r: (-r["spent_pence"], r["category_code"] or "~")
    )

    types: dict[ManagementType, dict[str, Any]] = {
        t: {
            "management_type": t.value,
            "budgets": 0,
            **dict.fromkeys(FLOW_FIELDS, 0),
            "held_pence_now": 0,
            "available_pence_now": 0,
        }
        for t in ManagementType
    }
    for management_type, count, held, available in session.execute(
        select(
            Budget.management_type,
            func.count(),
            func.sum(Budget.held_pence),
            func.sum(
                Budget.allocated_pence
                + Budget.adjusted_pence
                + Budget.refunded_pence
                - Budget.held_pence
                - Budget.captured_pence
            ),
        )
        .where(Budget.commissioner_id == org)
        .group_by(Budget.management_type)
    ):
        row = types[management_type]
        row["budgets"] = count
        row["held_pence_now"] = int(held)
        row["available_pence_now"] = int(available)
    for management_type, entry_type, amount in session.execute(
        select(Budget.management_type, LedgerEntry.entry_type, func.sum(LedgerEntry.amount_pence))
        .join(Budget, Budget.id == LedgerEntry.budget_id)
        .where(*window, LedgerEntry.entry_type.in_(list(_FLOW_OF)))
        .group_by(Budget.management_type, LedgerEntry.entry_type)
    ):
        types[management_type][_FLOW_OF[entry_type]] += int(amount)
    for row in types.values():
        row["spent_pence"] = row["captured_pence"] - row["refunded_pence"]
    by_type = list(types.values())
    totals = {
        name: sum(r[name] for r in by_type)
        for name in (
            "budgets",
            *FLOW_FIELDS,
            "spent_pence",
            "held_pence_now",
            "available_pence_now",
        )
    }
    return SpendReport(
        commissioner_id=org,
        date_from=date_from,
        date_to=date_to,
        by_category=by_category,
        by_management_type=by_type,
        totals=totals,
    )


REPORT_CSV_COLUMNS = (
    "dimension",
    "key",
    "name",
    "budgets",
    "captures",
    "allocated_pence",
    "adjusted_pence",
    "captured_pence",
    "refunded_pence",
    "spent_pence",
)


def report_rows(report: SpendReport) -> list[dict[str, Any]]:
    rows = [
        {
            "dimension": "category",
            "key": r["category_code"] or "",
            "name": r["category_name"],
            "captures": r["captures"],
            "captured_pence": r["captured_pence"],
            "refunded_pence": r["refunded_pence"],
            "spent_pence": r["spent_pence"],
        }
        for r in report.by_category
    ]
    rows.extend(
        {
            "dimension": "management_type",
            "key": r["management_type"],
            "name": r["management_type"].replace("_", " "),
            "budgets": r["budgets"],
            **{name: r[name] for name in (*FLOW_FIELDS, "spent_pence")},
        }
        for r in report.by_management_type
    )
    return rows


# --- pricing a basket for /check -----------------------------------------------------------------


def _pack_price(offer: Any, quantity: int) -> int:
    """The pack price for this quantity: the best volume break the quantity reaches."""
    price = offer.pack_price_pence
    for brk in offer.price_breaks or []:
        if quantity >= int(brk["min_qty"]):
            price = min(price, int(brk["pack_price_pence"]))
    return price


def price_basket(session: Session, items: Iterable[Mapping[str, Any]]) -> list[SpendItem]:
    """Turn ``[{offer_id | product_id, quantity, plan_line_id?}]`` into spend items priced from
    the catalogue: pack price (with volume breaks) times quantity, plus VAT at the offer's rate.
    A product is priced at its cheapest active, in-stock offer."""
    from ..catalog import service as catalog
    from ..catalog.models import OfferStatus
    from ..money import vat_pence

    priced: list[SpendItem] = []
    for index, item in enumerate(items):
        try:
            if item.get("offer_id"):
                offer = catalog.get_offer(session, item["offer_id"])
            else:
                catalog.get_product(session, item["product_id"])
                offer = catalog.cheapest_active_offer(session, item["product_id"])
        except NotFound as error:
            raise ValidationFailed(
                "The basket names something the catalogue does not have.",
                errors={"items": {str(index): [error.detail]}},
            ) from None
        if offer is None or offer.status != OfferStatus.ACTIVE:
            raise ValidationFailed(
                "The basket has something that is not on sale at the moment.",
                code="offer-not-available",
                errors={"items": {str(index): ["No active offer."]}},
            )
        quantity = int(item["quantity"])
        net = _pack_price(offer, quantity) * quantity
        priced.append(
            SpendItem(
                amount_pence=net + vat_pence(net, offer.vat_rate_percent),
                offer_id=offer.id,
                product_id=offer.product_id,
                plan_line_id=item.get("plan_line_id"),
            )
        )
    return priced
