"""Demo personal health budgets for the demo ICB's budget holders.

- Harriet: a personal wheelchair budget (notional, top-up allowed) with some history: a
  rollator bought (hold, capture) and a returned accessory refunded.
- Hamid: a direct payment for digital tools and a voice assistant, with Hope as his nominated
  representative; an app subscription bought, and (placed by the orders demo) a smart display waiting for approval.
- Hope: a budget for daily living aids, suspended pending her care-plan review.

Each budget is found by its reference before anything is created, and is created whole in one
transaction, so running the demo twice duplicates nothing.
"""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..accounts import service as accounts
from ..accounts.service import Principal
from ..budgets import ledger
from ..budgets import service as budgets
from ..budgets.models import Budget, ManagementType
from ..catalog import service as catalog
from ..catalog.models import Offer
from ..db import utcnow
from ..errors import NotFound
from . import DemoContext

MANAGER = "manager@icb.demo"
HARRIET, HAMID, HOPE = "holder.one@phb.demo", "holder.two@phb.demo", "holder.three@phb.demo"


def _financial_year() -> tuple[date, date]:
    """The current NHS financial year (1 April to 31 March), so the demo is always in period."""
    today = utcnow().date()
    start_year = today.year if today.month >= 4 else today.year - 1
    return date(start_year, 4, 1), date(start_year + 1, 3, 31)


def _user(session: Session, email: str) -> Principal:
    return Principal.for_user(accounts.find_user_by_email(session, email))


def _existing(session: Session, manager: Principal, reference: str) -> Budget | None:
    return session.scalar(
        select(Budget).where(
            Budget.commissioner_id == manager.organisation_id, Budget.reference == reference
        )
    )


def _wheelchair_budget(session: Session, manager: Principal, harriet: Principal) -> Budget:
    start, end = _financial_year()
    budget = budgets.create_budget(
        session,
        manager,
        reference="PWB-001",
        holder_id=harriet.user_id,
        management_type=ManagementType.NOTIONAL,
        period_start=start,
        period_end=end,
        approval_threshold_pence=250_000,
        top_up_allowed=True,  # personal wheelchair budgets let the person add their own money
        plan_lines=[
            {
                "description": (
                    "Move around my home and neighbourhood independently in a lightweight "
                    "active-user wheelchair"
                ),
                "category_codes": ["33193120"],
                "amount_pence": 180_000,
            },
            {
                "description": "Walk short distances safely, indoors and out, with a walking aid",
                "category_codes": ["33141720"],
                "amount_pence": 25_000,
            },
        ],
    )
    walking = budget.plan_lines[1]
    rollator = ledger.hold(
        session,
        manager,
        budget,
        18_900,
        plan_line_id=walking.id,
        category_id=walking.categories[0].id,
        order_ref="DEMO-ORD-1001",
        reason="Lightweight rollator with seat and bag",
    )
    captured = ledger.capture(session, manager, budget, rollator.id, reason="Dispatched").capture
    ledger.refund(
        session, manager, budget, captured.id, 2_400, reason="Shopping bag returned unused"
    )
    return budget


def _digital_budget(
    session: Session, manager: Principal, hamid: Principal, hope: Principal
) -> Budget:
    start, end = _financial_year()
    budget = budgets.create_budget(
        session,
        manager,
        reference="PHB-014",
        holder_id=hamid.user_id,
        representative_id=hope.user_id,
        management_type=ManagementType.DIRECT_PAYMENT,
        period_start=start,
        period_end=end,
        approval_threshold_pence=15_000,
        allocation_pence=5_000,
        plan_lines=[
            {
                "description": (
                    "Manage my diabetes day to day with an app and a connected blood glucose "
                    "and blood pressure monitor"
                ),
                "category_codes": ["48180000", "33195000"],
                "amount_pence": 40_000,
            },
            {
                "description": "Control lights, heating and calls by voice at home",
                "category_codes": ["MKT-VOICE"],
                "amount_pence": 25_000,
            },
        ],
    )
    apps = budget.plan_lines[0]
    app_category = catalog.get_category_by_code(session, "48180000")
    subscription = ledger.hold(
        session,
        hamid,
        budget,
        5_999,
        plan_line_id=apps.id,
        category_id=app_category.id,
        order_ref="DEMO-ORD-2001",
        reason="Diabetes self-management app, 12 months",
    )
    ledger.capture(session, manager, budget, subscription.id, reason="Licence issued")

    return budget


def _suspended_budget(session: Session, manager: Principal, hope: Principal) -> Budget:
    start, end = _financial_year()
    budget = budgets.create_budget(
        session,
        manager,
        reference="PHB-022",
        holder_id=hope.user_id,
        management_type=ManagementType.NOTIONAL,
        period_start=start,
        period_end=end,
        approval_threshold_pence=20_000,
        plan_lines=[
            {
                "description": "Cook and wash on my own with daily living aids",
                "category_codes": ["33196200"],
                "amount_pence": 60_000,
            }
        ],
    )
    return budgets.change_status(
        session,
        manager,
        budget,
        "suspend",
        "Care plan review due: spending paused until the review meeting",
    )


def _offer_in(session: Session, category_code: str) -> Offer | None:
    """The cheapest active, in-stock offer in the category's subtree, if the catalogue demo
    listed one (ties by offer id, so every run picks the same)."""
    try:
        product_ids = catalog.product_ids_in_category(session, category_code)
    except NotFound:  # no category tree, no example
        return None
    offers = catalog.cheapest_active_offers(session, product_ids).values()
    return min(offers, key=lambda o: (o.pack_price_pence, o.id), default=None)


def seed(session: Session, context: DemoContext) -> None:
    context.progress("Loading personal health budgets…")
    manager = _user(session, MANAGER)
    harriet, hamid, hope = _user(session, HARRIET), _user(session, HAMID), _user(session, HOPE)
    made = {
        "PWB-001": _existing(session, manager, "PWB-001")
        or _wheelchair_budget(session, manager, harriet),
        "PHB-014": _existing(session, manager, "PHB-014")
        or _digital_budget(session, manager, hamid, hope),
        "PHB-022": _existing(session, manager, "PHB-022")
        or _suspended_budget(session, manager, hope),
    }
    context.objects["budgets"] = {ref: b.id for ref, b in made.items()}

    wheelchair = made["PWB-001"].id
    holder = "-H 'Authorization: Bearer {token:budget_holder}'"
    manager_auth = "-H 'Authorization: Bearer {token:budget_manager}'"
    context.examples += [
        (
            "Your personal health budgets (as Harriet, a budget holder)",
            f"curl -s {holder} {{base}}/api/v1/budgets",
        ),
        (
            "Harriet's wheelchair budget: balances and what is left on each care-plan line",
            f"curl -s {holder} {{base}}/api/v1/budgets/{wheelchair}",
        ),
        (
            "Her ledger, newest first",
            f"curl -s {holder} {{base}}/api/v1/budgets/{wheelchair}/ledger",
        ),
        (
            "Her statement as CSV (opening balance, every entry, closing balance)",
            f"curl -s {holder} '{{base}}/api/v1/budgets/{wheelchair}/statement?format=csv'",
        ),
    ]
    offer = _offer_in(session, "33193000")
    if offer is not None:
        context.examples.append(
            (
                "Would the budget pay for this? (the spending check)",
                f"curl -s {holder} -H 'Content-Type: application/json' "
                f'-d \'{{"items": [{{"offer_id": "{offer.id}", "quantity": 1}}]}}\' '
                f"{{base}}/api/v1/budgets/{wheelchair}/check",
            )
        )
    context.examples.append(
        ("The budget manager's approval queue", f"curl -s {manager_auth} {{base}}/api/v1/approvals")
    )
