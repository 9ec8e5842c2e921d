"""The budget manager's approval queue.

Another domain (orders) asks for an approval with ``request_approval`` when ``check_spend``
answers ``needs_approval``, and learns the decision through a handler it registers for its
subject type, so budgets never imports it::

    # orders/service.py (at import time)
    from marketplace.budgets.approvals import register_decision_handler

    def _on_decision(session, approval, actor):
        order = ...find by approval.subject_ref...
        if approval.status == ApprovalStatus.APPROVED: place it
        else: release its hold and cancel it

    register_decision_handler("order", _on_decision)

The handler runs in the same transaction as the decision: if it raises, the decision is not
recorded. A subject type with no handler is simply recorded (e.g. a manual request).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.orm import Session, selectinload

from .. import audit
from ..accounts.models import Role
from ..accounts.service import Principal
from ..audit import jsonable
from ..db import utcnow
from ..errors import Conflict, Forbidden, ValidationFailed, not_found
from . import ledger
from .models import Approval, ApprovalStatus, Budget, BudgetStatus
from .rules import Reason
from .service import require_manager

DecisionHandler = Callable[[Session, Approval, Principal], None]
_handlers: dict[str, DecisionHandler] = {}
APPROVAL_FIELDS = ("status", "decided_by_label", "decided_at", "decision_reason")


def register_decision_handler(subject_type: str, handler: DecisionHandler) -> None:
    """Call ``handler(session, approval, actor)`` when an approval of ``subject_type`` is
    approved or rejected (``approval.status`` says which)."""
    _handlers[subject_type] = handler


def unregister_decision_handler(subject_type: str) -> None:
    _handlers.pop(subject_type, None)


def request_approval(
    session: Session,
    budget: Budget,
    order_ref: str,
    amount: int,
    items: Iterable[Mapping[str, Any]],
    reasons: Iterable[Reason | Mapping[str, Any]],
    *,
    subject_type: str = "order",
    actor: Principal | None = None,
) -> Approval:
    """Put a spend in the budget manager's queue. Asking again for the same subject returns the
    approval already asked for."""
    actor = actor or Principal.system("orders")
    order_ref = (order_ref or "").strip()
    if not order_ref or len(order_ref) > 100 or not subject_type or len(subject_type) > 32:
        raise ValidationFailed(
            "An approval names what waits for it.",
            errors={"order_ref": ["1 to 100 characters."]},
        )
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValidationFailed(
            "The amount is a whole number of pence.", errors={"amount": ["Not a valid amount."]}
        )
    existing = session.scalar(
        select(Approval).where(
            Approval.budget_id == budget.id,
            Approval.subject_type == subject_type,
            Approval.subject_ref == order_ref,
        )
    )
    if existing is not None:
        return existing
    approval = Approval(
        budget_id=budget.id,
        subject_type=subject_type,
        subject_ref=order_ref,
        amount_pence=amount,
        items=jsonable([dict(i) for i in items]),
        reasons=[r.as_dict() if isinstance(r, Reason) else jsonable(dict(r)) for r in reasons],
        status=ApprovalStatus.PENDING,
        requested_by_user_id=actor.user_id,
        requested_by_label=actor.label,
        requested_at=utcnow(),
    )
    session.add(approval)
    session.flush()
    audit.record(
        session,
        actor,
        "budget.approval.request",
        "budget_approval",
        approval.id,
        after={
            "budget_id": budget.id,
            "subject_type": subject_type,
            "subject_ref": order_ref,
            "amount_pence": approval.amount_pence,
        },
    )
    return approval


def visible_approvals(actor: Principal) -> Select[tuple[Approval]]:
    if actor.role != Role.BUDGET_MANAGER:
        raise Forbidden("The approval queue is for budget managers.", code="wrong-role")
    return (
        select(Approval)
        .join(Budget, Budget.id == Approval.budget_id)
        .where(Budget.commissioner_id == actor.organisation_id)
        .options(selectinload(Approval.budget).selectinload(Budget.holder))
    )


def list_approvals(
    actor: Principal, *, status: ApprovalStatus | None = None, budget_id: str | None = None
) -> Select[tuple[Approval]]:
    stmt = visible_approvals(actor)
    if status is not None:
        stmt = stmt.where(Approval.status == status)
    if budget_id:
        stmt = stmt.where(Approval.budget_id == budget_id)
    return stmt


def get_approval(session: Session, actor: Principal, approval_id: str) -> Approval:
    approval = session.scalar(visible_approvals(actor).where(Approval.id == approval_id))
    if approval is None:
        raise not_found("approval", approval_id)
    return approval


def decide(
    session: Session, actor: Principal, approval_id: str, *, approve: bool, reason: str
) -> Approval:
    """Approve or reject, with a reason. Exactly once: a guarded UPDATE from ``pending``, so two
    managers deciding at once cannot both win. An approval needs an active budget."""
    approval = get_approval(session, actor, approval_id)
    require_manager(actor, approval.budget)
    reason = ledger.clean_reason(reason, required=True)
    if approve and approval.budget.status != BudgetStatus.ACTIVE:
        raise Conflict(
            f"The budget is {approval.budget.status.value}; reactivate it before approving.",
            code="budget-not-active",
        )
    status = ApprovalStatus.APPROVED if approve else ApprovalStatus.REJECTED
    result = session.execute(
        update(Approval)
        .where(Approval.id == approval.id, Approval.status == ApprovalStatus.PENDING)
        .values(
            status=status,
            decided_by_user_id=actor.user_id,
            decided_by_label=actor.label,
            decided_at=utcnow(),
            decision_reason=reason,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(approval)
    if result.rowcount != 1:
        raise Conflict(
            f"This approval was already {approval.status.value}.",
            code="approval-already-decided",
            approval_status=approval.status.value,
        )
    handler = _handlers.get(approval.subject_type)
    if handler is not None:
        handler(session, approval, actor)
    audit.record(
        session,
        actor,
        f"budget.approval.{status.value}",
        "budget_approval",
        approval.id,
        before={"status": ApprovalStatus.PENDING.value},
        after=audit.snapshot(approval, APPROVAL_FIELDS),
    )
    return approval
