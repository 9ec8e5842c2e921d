"""The budgets API contract. Every amount is integer pence (``*_pence``, strict integers)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate, validates_schema

from ..schemas import PageArgs, Pence, StrictInteger
from .ledger import MAX_AMOUNT_PENCE, REASON_MAX
from .models import ApprovalStatus, BudgetStatus, EntryType, ManagementType

_ID = validate.Length(min=1, max=40)
_REASON = validate.Length(max=REASON_MAX)
_REQUIRED_REASON = validate.Length(min=1, max=REASON_MAX)
_AMOUNT = validate.Range(min=1, max=MAX_AMOUNT_PENCE)


class CategoryRefSchema(ma.Schema):
    id = fields.String()
    code = fields.String()
    name = fields.String()


class PersonSchema(ma.Schema):
    id = fields.String()
    name = fields.String(allow_none=True)
    email = fields.String()


class BalancesSchema(ma.Schema):
    allocated_pence = Pence()
    adjusted_pence = Pence(signed=True)
    held_pence = Pence()
    captured_pence = Pence()
    refunded_pence = Pence()
    spent_pence = Pence(metadata={"description": "Captured less refunded."})
    available_pence = Pence(
        metadata={"description": "allocated + adjusted + refunded - held - captured."}
    )


class PlanLineCreateSchema(ma.Schema):
    description = fields.String(
        required=True,
        validate=validate.Length(min=1, max=1000),
        metadata={"description": "The agreed outcome this money is for."},
    )
    category_codes = fields.List(
        fields.String(validate=validate.Length(min=1, max=32)),
        required=True,
        validate=validate.Length(min=1, max=50),
        metadata={"description": "Categories covered, each with its descendants."},
    )
    amount_pence = Pence(load_default=0, validate=validate.Range(min=0, max=MAX_AMOUNT_PENCE))


class PlanLineSchema(BalancesSchema):
    id = fields.String()
    description = fields.String()
    categories = fields.List(fields.Nested(CategoryRefSchema))
    remaining_pence = Pence(metadata={"description": "What is left to spend on this line."})
    created_at = fields.AwareDateTime()


class BudgetCreateSchema(ma.Schema):
    reference = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Length(max=64),
        metadata={"description": "The commissioner's own reference, unique within it."},
    )
    holder_id = fields.String(required=True, validate=_ID)
    representative_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    management_type = fields.Enum(ManagementType, by_value=True, required=True)
    managing_organisation_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    period_start = fields.Date(required=True)
    period_end = fields.Date(required=True)
    approval_threshold_pence = Pence(required=True)
    top_up_allowed = fields.Boolean(load_default=False)
    allocation_pence = Pence(
        load_default=0,
        validate=validate.Range(min=0, max=MAX_AMOUNT_PENCE),
        metadata={"description": "Opening allocation not tied to a plan line."},
    )
    plan_lines = fields.List(
        fields.Nested(PlanLineCreateSchema), load_default=list, validate=validate.Length(max=50)
    )


class BudgetSchema(ma.Schema):
    id = fields.String()
    reference = fields.String(allow_none=True)
    holder = fields.Nested(PersonSchema)
    representative = fields.Nested(PersonSchema, allow_none=True)
    commissioner_id = fields.String()
    management_type = fields.Enum(ManagementType, by_value=True)
    managing_organisation_id = fields.String(allow_none=True)
    period_start = fields.Date()
    period_end = fields.Date()
    status = fields.Enum(BudgetStatus, by_value=True)
    status_reason = fields.String(allow_none=True)
    approval_threshold_pence = Pence()
    top_up_allowed = fields.Boolean()
    balances = fields.Method("_balances", metadata={"description": "Balances, in pence."})
    plan_lines = fields.List(fields.Nested(PlanLineSchema))
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()

    def _balances(self, budget) -> dict:
        return BalancesSchema().dump(budget)


class BudgetSummarySchema(BudgetSchema):
    class Meta:
        exclude = ("plan_lines",)


class BudgetListArgs(PageArgs):
    status = fields.Enum(BudgetStatus, by_value=True, load_default=None)
    management_type = fields.Enum(ManagementType, by_value=True, load_default=None)
    holder_id = fields.String(load_default=None, validate=_ID)


class AllocationSchema(ma.Schema):
    amount_pence = Pence(required=True, validate=_AMOUNT)
    plan_line_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    reason = fields.String(load_default=None, allow_none=True, validate=_REASON)


class AdjustmentSchema(ma.Schema):
    amount_pence = Pence(
        signed=True,
        required=True,
        validate=[
            validate.Range(min=-MAX_AMOUNT_PENCE, max=MAX_AMOUNT_PENCE),
            validate.NoneOf([0], error="An adjustment is never zero."),
        ],
        metadata={"description": "Signed pence: negative takes money away (e.g. a clawback)."},
    )
    plan_line_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    reason = fields.String(required=True, validate=_REQUIRED_REASON)


class HoldCreateSchema(ma.Schema):
    amount_pence = Pence(required=True, validate=_AMOUNT)
    plan_line_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    category_code = fields.String(
        load_default=None, allow_none=True, validate=validate.Length(min=1, max=32)
    )
    order_ref = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=100))
    reason = fields.String(load_default=None, allow_none=True, validate=_REASON)


class ReleaseSchema(ma.Schema):
    reason = fields.String(load_default=None, allow_none=True, validate=_REASON)


class ReasonSchema(ma.Schema):
    reason = fields.String(required=True, validate=_REQUIRED_REASON)


class LedgerEntrySchema(ma.Schema):
    id = fields.String()
    budget_id = fields.String()
    seq = StrictInteger(metadata={"description": "Position in this budget's ledger (1, 2, ...)."})
    entry_type = fields.Enum(EntryType, by_value=True)
    amount_pence = Pence(signed=True)
    effect_pence = Pence(
        signed=True, metadata={"description": "The change to the available balance."}
    )
    plan_line_id = fields.String(allow_none=True)
    category = fields.Nested(CategoryRefSchema, allow_none=True)
    order_ref = fields.String(allow_none=True)
    refers_to_id = fields.String(
        allow_none=True,
        metadata={
            "description": "The hold a release/capture settles; the capture a refund returns."
        },
    )
    actor = fields.String(attribute="actor_label")
    reason = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()


class LedgerListArgs(PageArgs):
    entry_type = fields.Enum(EntryType, by_value=True, load_default=None)
    order = fields.String(load_default="desc", validate=validate.OneOf(["asc", "desc"]))


class StatementArgs(ma.Schema):
    date_from = fields.Date(data_key="from", load_default=None)
    date_to = fields.Date(data_key="to", load_default=None)
    format = fields.String(load_default=None, validate=validate.OneOf(["json", "csv"]))


class StatementLineSchema(LedgerEntrySchema):
    balance_pence = Pence(signed=True, metadata={"description": "Available after this entry."})


class StatementSchema(ma.Schema):
    budget_id = fields.String(attribute="budget.id")
    holder = fields.Nested(PersonSchema, attribute="budget.holder")
    date_from = fields.Date(data_key="from")
    date_to = fields.Date(data_key="to")
    opening_balance_pence = Pence(signed=True)
    closing_balance_pence = Pence(signed=True)
    totals = fields.Dict(
        keys=fields.String(),
        values=Pence(signed=True),
        metadata={"description": "Sum of amounts by entry type within the period."},
    )
    entries = fields.Method("_entries")
    generated_at = fields.AwareDateTime()

    def _entries(self, statement) -> list:
        schema = LedgerEntrySchema()
        return [
            {**schema.dump(line.entry), "balance_pence": line.balance_pence}
            for line in statement.lines
        ]


class CheckItemSchema(ma.Schema):
    offer_id = fields.String(load_default=None, allow_none=True, validate=_ID)
    product_id = fields.String(
        load_default=None,
        allow_none=True,
        validate=_ID,
        metadata={"description": "Priced at the product's cheapest active offer."},
    )
    quantity = StrictInteger(required=True, validate=validate.Range(min=1, max=10_000))
    plan_line_id = fields.String(load_default=None, allow_none=True, validate=_ID)

    @validates_schema
    def _one_of(self, data, **_kwargs):
        if bool(data.get("offer_id")) == bool(data.get("product_id")):
            raise ma.ValidationError("Give exactly one of offer_id and product_id.", "_schema")


class CheckRequestSchema(ma.Schema):
    items = fields.List(
        fields.Nested(CheckItemSchema), required=True, validate=validate.Length(min=1, max=100)
    )


class CheckReasonSchema(ma.Schema):
    code = fields.String()
    verdict = fields.String()
    message = fields.String()


class CheckItemResultSchema(ma.Schema):
    index = StrictInteger()
    offer_id = fields.String(attribute="item.offer_id", allow_none=True)
    product_id = fields.String(attribute="item.product_id", allow_none=True)
    category = fields.Nested(CategoryRefSchema)
    plan_line_id = fields.String(attribute="plan_line.id", allow_none=True)
    amount_pence = Pence(attribute="item.amount_pence")
    budget_pence = Pence(metadata={"description": "What the budget would pay."})
    top_up_pence = Pence(metadata={"description": "What the holder would pay by card."})
    verdict = fields.String(metadata={"description": "allowed, needs_approval or refused."})
    reasons = fields.List(fields.Nested(CheckReasonSchema))


class CheckResultSchema(ma.Schema):
    budget_id = fields.String(attribute="budget.id")
    verdict = fields.String(metadata={"description": "allowed, needs_approval or refused."})
    total_pence = Pence()
    budget_pence = Pence()
    top_up_pence = Pence()
    available_pence = Pence(attribute="budget.available_pence")
    reasons = fields.List(fields.Nested(CheckReasonSchema))
    items = fields.List(fields.Nested(CheckItemResultSchema))


class ApprovalSchema(ma.Schema):
    id = fields.String()
    budget_id = fields.String()
    holder = fields.Nested(PersonSchema, attribute="budget.holder")
    subject_type = fields.String()
    subject_ref = fields.String()
    amount_pence = Pence()
    items = fields.List(fields.Dict())
    reasons = fields.List(fields.Dict())
    status = fields.Enum(ApprovalStatus, by_value=True)
    requested_by = fields.String(attribute="requested_by_label")
    requested_at = fields.AwareDateTime()
    decided_by = fields.String(attribute="decided_by_label", allow_none=True)
    decided_at = fields.AwareDateTime(allow_none=True)
    decision_reason = fields.String(allow_none=True)


class ApprovalListArgs(PageArgs):
    status = fields.Enum(ApprovalStatus, by_value=True, load_default=ApprovalStatus.PENDING)
    budget_id = fields.String(load_default=None, validate=_ID)


class ReportArgs(ma.Schema):
    date_from = fields.Date(data_key="from", load_default=None)
    date_to = fields.Date(data_key="to", load_default=None)
    format = fields.String(load_default=None, validate=validate.OneOf(["json", "csv"]))


class CategorySpendSchema(ma.Schema):
    category_id = fields.String(allow_none=True)
    category_code = fields.String(allow_none=True)
    category_name = fields.String()
    captures = StrictInteger()
    captured_pence = Pence()
    refunded_pence = Pence()
    spent_pence = Pence(signed=True)


class ManagementTypeSpendSchema(ma.Schema):
    management_type = fields.String()
    budgets = StrictInteger()
    allocated_pence = Pence()
    adjusted_pence = Pence(signed=True)
    captured_pence = Pence()
    refunded_pence = Pence()
    spent_pence = Pence(signed=True)
    held_pence_now = Pence()
    available_pence_now = Pence()


class SpendReportSchema(ma.Schema):
    commissioner_id = fields.String()
    date_from = fields.Date(data_key="from", allow_none=True)
    date_to = fields.Date(data_key="to", allow_none=True)
    by_category = fields.List(fields.Nested(CategorySpendSchema))
    by_management_type = fields.List(fields.Nested(ManagementTypeSpendSchema))
    totals = fields.Dict(keys=fields.String(), values=StrictInteger())
