"""Personal health budgets over HTTP (docs/budgets.md lists who may call what)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from flask import Response, request

from ..accounts.models import Role
from ..auth import authenticated, current_principal
from ..catalog import service as catalog
from ..errors import NotFound, ValidationFailed
from ..idempotency import idempotent
from ..pagination import paginate
from ..schemas import page_of
from ..web import Blueprint, get_session
from . import approvals, ledger, rules, service
from .models import Approval, Budget, LedgerEntry
from .schemas import (
    AdjustmentSchema,
    AllocationSchema,
    ApprovalListArgs,
    ApprovalSchema,
    BudgetCreateSchema,
    BudgetListArgs,
    BudgetSchema,
    BudgetSummarySchema,
    CheckRequestSchema,
    CheckResultSchema,
    HoldCreateSchema,
    LedgerEntrySchema,
    LedgerListArgs,
    PlanLineCreateSchema,
    PlanLineSchema,
    ReasonSchema,
    ReleaseSchema,
    ReportArgs,
    SpendReportSchema,
    StatementArgs,
    StatementSchema,
)

blp = Blueprint(
    "budgets",
    __name__,
    description=(
        "Personal health budgets: care plans, balances, the append-only ledger, statements, the "
        "spending check and the budget manager's approval queue."
    ),
)
HOLDERS_AND_MANAGERS = (Role.BUDGET_HOLDER, Role.BUDGET_MANAGER)
CSV_DOC = {"schema": {"type": "string"}, "content_type": "text/csv"}


# --- CSV ---------------------------------------------------------------------------------------


def wants_csv(format_arg: str | None) -> bool:
    if format_arg:
        return format_arg == "csv"
    best = request.accept_mimetypes.best_match(["application/json", "text/csv"])
    return best == "text/csv"


def _cell(value: Any) -> Any:
    """Spreadsheet-safe: text that a spreadsheet would run as a formula is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_response(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], filename: str
) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    response = Response(buffer.getvalue(), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- budgets -----------------------------------------------------------------------------------


@blp.route("/budgets", methods=["GET"])
@authenticated(*HOLDERS_AND_MANAGERS)
@blp.arguments(BudgetListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(BudgetSummarySchema))
def list_budgets(limit: int, cursor: str | None, **filters):
    """Budgets you may see: managers their commissioner's; holders their own and any they
    represent. Filters: status, management_type, holder_id."""
    stmt = service.list_budgets(current_principal(), **filters)
    return paginate(
        get_session(), stmt, order_by=[Budget.created_at, Budget.id], cursor=cursor, limit=limit
    )


@blp.route("/budgets", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(BudgetCreateSchema)
@blp.response(201, BudgetSchema)
@blp.alt_response(409, response="CONFLICT")
def create_budget(body: dict):
    """Set up a budget for one of your commissioner's budget holders, with its care plan."""
    return service.create_budget(get_session(), current_principal(), **body)


@blp.route("/budgets/spend-report", methods=["GET"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(ReportArgs, location="query", as_kwargs=True)
@blp.response(200, SpendReportSchema)
@blp.alt_response(200, success=True, description="CSV (format=csv or Accept: text/csv)", **CSV_DOC)
def spend_report(date_from=None, date_to=None, format=None):
    """Spend by category and by management type across your commissioner's budgets, for
    ledger entries dated within ``from``..``to`` (all time by default). JSON or CSV."""
    report = service.spend_report(get_session(), current_principal(), date_from, date_to)
    if wants_csv(format):
        return csv_response(
            service.report_rows(report), service.REPORT_CSV_COLUMNS, "budget-spend-report.csv"
        )
    return report


@blp.route("/budgets/<string:budget_id>", methods=["GET"])
@authenticated(*HOLDERS_AND_MANAGERS)
@blp.response(200, BudgetSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_budget(budget_id: str):
    """A budget: status, balances, and each care-plan line with what is left on it."""
    return service.get_budget(get_session(), current_principal(), budget_id)


@blp.route("/budgets/<string:budget_id>/plan-lines", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(PlanLineCreateSchema)
@blp.response(201, PlanLineSchema)
@blp.alt_response(404, response="NOT_FOUND")
def add_plan_line(body: dict, budget_id: str):
    """Add a care-plan line (outcome, categories, amount allocated to it)."""
    session, actor = get_session(), current_principal()
    budget = service.get_budget(session, actor, budget_id)
    return service.add_plan_line(session, actor, budget, **body)


def _status_view(action: str, summary: str):
    @authenticated(Role.BUDGET_MANAGER)
    @blp.arguments(ReasonSchema)
    @blp.response(200, BudgetSchema)
    @blp.alt_response(404, response="NOT_FOUND")
    @blp.alt_response(409, response="CONFLICT")
    def view(body: dict, budget_id: str):
        session, actor = get_session(), current_principal()
        budget = service.get_budget(session, actor, budget_id)
        return service.change_status(session, actor, budget, action, body["reason"])

    view.__name__ = f"{action}_budget"
    view.__doc__ = summary
    blp.route(f"/budgets/<string:budget_id>/{action}", methods=["POST"])(view)


_status_view("suspend", "Suspend an active budget (nothing can be spent until it is reactivated).")
_status_view("reactivate", "Reactivate a suspended budget.")
_status_view("close", "Close a budget for good (only once no money is on hold).")


# --- money ---------------------------------------------------------------------------------------


@blp.route("/budgets/<string:budget_id>/allocations", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@idempotent
@blp.arguments(AllocationSchema)
@blp.response(201, LedgerEntrySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def allocate(body: dict, budget_id: str):
    """Add money to the budget, or to one of its plan lines. Accepts ``Idempotency-Key``."""
    session, actor = get_session(), current_principal()
    budget = service.get_budget(session, actor, budget_id)
    service.require_manager(actor, budget)
    return ledger.allocate(session, actor, budget, **body)


@blp.route("/budgets/<string:budget_id>/adjustments", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@idempotent
@blp.arguments(AdjustmentSchema)
@blp.response(201, LedgerEntrySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def adjust(body: dict, budget_id: str):
    """A signed correction with a reason (never taking the balance below zero). Accepts
    ``Idempotency-Key``."""
    session, actor = get_session(), current_principal()
    budget = service.get_budget(session, actor, budget_id)
    service.require_manager(actor, budget)
    return ledger.adjust(session, actor, budget, **body)


@blp.route("/budgets/<string:budget_id>/holds", methods=["POST"])
@authenticated(*HOLDERS_AND_MANAGERS)
@idempotent
@blp.arguments(HoldCreateSchema)
@blp.response(201, LedgerEntrySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def create_hold(body: dict, budget_id: str):
    """Reserve money (what placing an order does). Only whoever may spend this budget; 409
    names the shortfall when the budget or the plan line cannot cover it. Accepts
    ``Idempotency-Key``."""
    session, actor = get_session(), current_principal()
    budget = service.get_budget(session, actor, budget_id)
    category_code = body.pop("category_code", None)
    if category_code:
        try:
            body["category_id"] = catalog.get_category_by_code(session, category_code).id
        except NotFound:
            raise ValidationFailed(
                "Unknown category.", errors={"category_code": ["No such category."]}
            ) from None
    return ledger.hold(session, actor, budget, **body)


@blp.route("/budgets/<string:budget_id>/holds/<string:hold_id>/release", methods=["POST"])
@authenticated(*HOLDERS_AND_MANAGERS)
@idempotent
@blp.arguments(ReleaseSchema)
@blp.response(201, LedgerEntrySchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def release_hold(body: dict, budget_id: str, hold_id: str):
    """Give a hold back in full (exactly once). Whoever may spend the budget, or its
    commissioner's budget managers. Accepts ``Idempotency-Key``."""
    session, actor = get_session(), current_principal()
    budget = service.get_budget(session, actor, budget_id)
    if not service.can_spend(actor, budget):
        service.require_manager(actor, budget)
    return ledger.release(session, actor, budget, hold_id, **body)


@blp.route("/budgets/<string:budget_id>/ledger", methods=["GET"])
@authenticated(*HOLDERS_AND_MANAGERS)
@blp.arguments(LedgerListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(LedgerEntrySchema))
@blp.alt_response(404, response="NOT_FOUND")
def list_ledger(
    budget_id: str, limit: int, cursor: str | None, entry_type=None, order: str = "desc"
):
    """Every entry of the budget's ledger (newest first unless ``order=asc``)."""
    session = get_session()
    budget = service.get_budget(session, current_principal(), budget_id)
    return paginate(
        session,
        service.ledger_entries(budget, entry_type=entry_type),
        order_by=[LedgerEntry.seq],
        cursor=cursor,
        limit=limit,
        descending=order == "desc",
    )


@blp.route("/budgets/<string:budget_id>/statement", methods=["GET"])
@authenticated(*HOLDERS_AND_MANAGERS)
@blp.arguments(StatementArgs, location="query", as_kwargs=True)
@blp.response(200, StatementSchema)
@blp.alt_response(200, success=True, description="CSV (format=csv or Accept: text/csv)", **CSV_DOC)
@blp.alt_response(404, response="NOT_FOUND")
def get_statement(budget_id: str, date_from=None, date_to=None, format=None):
    """Opening balance, every entry with the running balance, and the closing balance for
    ``from``..``to`` (UTC dates, inclusive; default: the budget's period up to today)."""
    session = get_session()
    budget = service.get_budget(session, current_principal(), budget_id)
    result = service.statement(session, budget, date_from, date_to)
    if wants_csv(format):
        return csv_response(
            service.statement_rows(result),
            service.STATEMENT_CSV_COLUMNS,
            f"statement-{budget.id}-{result.date_from}-{result.date_to}.csv",
        )
    return result


@blp.route("/budgets/<string:budget_id>/check", methods=["POST"])
@authenticated(*HOLDERS_AND_MANAGERS)
@blp.arguments(CheckRequestSchema)
@blp.response(200, CheckResultSchema)
@blp.alt_response(404, response="NOT_FOUND")
def check(body: dict, budget_id: str):
    """Would this basket be allowed? Prices each offer (or a product's cheapest offer) from
    the catalogue, VAT included, and answers ``allowed``, ``needs_approval`` or ``refused`` with
    a reason for every item. Moves no money."""
    session = get_session()
    budget = service.get_budget(session, current_principal(), budget_id)
    return rules.check_spend(session, budget, service.price_basket(session, body["items"]))


# --- approvals --------------------------------------------------------------------------------


@blp.route("/approvals", methods=["GET"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(ApprovalListArgs, location="query", as_kwargs=True)
@blp.response(200, page_of(ApprovalSchema))
def list_approvals(limit: int, cursor: str | None, status=None, budget_id=None):
    """Your commissioner's approval queue (pending by default), oldest first."""
    stmt = approvals.list_approvals(current_principal(), status=status, budget_id=budget_id)
    return paginate(
        get_session(),
        stmt,
        order_by=[Approval.requested_at, Approval.id],
        cursor=cursor,
        limit=limit,
    )


@blp.route("/approvals/<string:approval_id>", methods=["GET"])
@authenticated(Role.BUDGET_MANAGER)
@blp.response(200, ApprovalSchema)
@blp.alt_response(404, response="NOT_FOUND")
def get_approval(approval_id: str):
    """One approval request."""
    return approvals.get_approval(get_session(), current_principal(), approval_id)


@blp.route("/approvals/<string:approval_id>/approve", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(ReasonSchema)
@blp.response(200, ApprovalSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def approve(body: dict, approval_id: str):
    """Approve, with a reason (exactly once)."""
    return approvals.decide(
        get_session(), current_principal(), approval_id, approve=True, reason=body["reason"]
    )


@blp.route("/approvals/<string:approval_id>/reject", methods=["POST"])
@authenticated(Role.BUDGET_MANAGER)
@blp.arguments(ReasonSchema)
@blp.response(200, ApprovalSchema)
@blp.alt_response(404, response="NOT_FOUND")
@blp.alt_response(409, response="CONFLICT")
def reject(body: dict, approval_id: str):
    """Reject, with a reason (exactly once)."""
    return approvals.decide(
        get_session(), current_principal(), approval_id, approve=False, reason=body["reason"]
    )
