"""Personal health budgets: the budget, its care-plan lines, the append-only ledger, approvals.

The ledger (``budget_ledger_entries``) is the only source of truth for money. The budget row and
each plan-line row also carry a *cached* balance (five running totals) that every ledger
operation moves with a guarded single-statement UPDATE in the same transaction as the entry it
writes; ``ledger.verify_ledger`` recomputes the totals from the entries and compares them.

Balance arithmetic (the same for a budget and for a plan line)::

    available = allocated + adjusted + refunded - held - captured

``held`` is the sum of open holds; ``captured`` what was spent; ``refunded`` what came back.
"""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from ..accounts.models import Organisation, User, enum_column
from ..catalog.models import Category
from ..db import Base, PublicIdMixin, TimestampMixin, utcnow

JSONType = JSON().with_variant(JSONB(), "postgresql")


class ManagementType(enum.StrEnum):
    NOTIONAL = "notional"  # the commissioner holds the money and buys on the person's behalf
    THIRD_PARTY = "third_party"  # an organisation holds and manages it for the person
    DIRECT_PAYMENT = "direct_payment"  # the person (or their representative) holds it


class BudgetStatus(enum.StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class EntryType(enum.StrEnum):
    ALLOCATION = "allocation"
    HOLD = "hold"
    RELEASE = "release"
    CAPTURE = "capture"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


BALANCE_FIELDS = (
    "allocated_pence",
    "adjusted_pence",
    "held_pence",
    "captured_pence",
    "refunded_pence",
)

# The same CHECKs on the budget row and on every plan-line row: the database refuses a cached
# balance that went negative even if a code path forgot its guard.
_AVAILABLE_SQL = "allocated_pence + adjusted_pence + refunded_pence - held_pence - captured_pence"


def _balance_checks() -> tuple[CheckConstraint, ...]:
    return (
        CheckConstraint("allocated_pence >= 0", name="allocated_not_negative"),
        CheckConstraint("held_pence >= 0", name="held_not_negative"),
        CheckConstraint("captured_pence >= 0", name="captured_not_negative"),
        CheckConstraint(
            "refunded_pence >= 0 AND refunded_pence <= captured_pence", name="refunds_within_spend"
        ),
        CheckConstraint(f"{_AVAILABLE_SQL} >= 0", name="available_not_negative"),
    )


class BalanceMixin:
    """Cached running totals, in pence, moved only by ``budgets.ledger``."""

    allocated_pence: Mapped[int] = mapped_column(Integer, default=0)
    adjusted_pence: Mapped[int] = mapped_column(Integer, default=0)  # signed
    held_pence: Mapped[int] = mapped_column(Integer, default=0)
    captured_pence: Mapped[int] = mapped_column(Integer, default=0)
    refunded_pence: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def available_pence(self) -> int:
        return (
            self.allocated_pence
            + self.adjusted_pence
            + self.refunded_pence
            - self.held_pence
            - self.captured_pence
        )

    @property
    def spent_pence(self) -> int:
        return self.captured_pence - self.refunded_pence


class Budget(PublicIdMixin, TimestampMixin, BalanceMixin, Base):
    __tablename__ = "budgets"
    __table_args__ = (
        UniqueConstraint("commissioner_id", "reference"),
        CheckConstraint("period_end >= period_start", name="period_in_order"),
        CheckConstraint("approval_threshold_pence >= 0", name="threshold_not_negative"),
        CheckConstraint(
            "(management_type = 'third_party') = (managing_organisation_id IS NOT NULL)",
            name="third_party_has_manager",
        ),
        CheckConstraint("entry_count >= 0", name="entry_count_not_negative"),
        *_balance_checks(),
        Index("ix_budgets_commissioner_created", "commissioner_id", "created_at", "id"),
    )
    id_prefix = "phb"

    reference: Mapped[str | None] = mapped_column(String(64))  # the commissioner's own reference
    holder_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    representative_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    commissioner_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    management_type: Mapped[ManagementType] = mapped_column(
        enum_column(ManagementType, "budget_management_type")
    )
    managing_organisation_id: Mapped[str | None] = mapped_column(
        ForeignKey("organisations.id"), index=True
    )
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)  # inclusive
    status: Mapped[BudgetStatus] = mapped_column(
        enum_column(BudgetStatus, "budget_status"), default=BudgetStatus.ACTIVE
    )
    status_reason: Mapped[str | None] = mapped_column(String(500))
    approval_threshold_pence: Mapped[int] = mapped_column(Integer)
    top_up_allowed: Mapped[bool] = mapped_column(Boolean, default=False)
    # How many ledger entries the budget has: the guarded update that moves the money also
    # hands out the entries' sequence numbers, so the ledger's order is the order in which the
    # moves were serialised.
    entry_count: Mapped[int] = mapped_column(Integer, default=0)

    holder: Mapped[User] = relationship(foreign_keys=[holder_user_id])
    representative: Mapped[User | None] = relationship(foreign_keys=[representative_user_id])
    commissioner: Mapped[Organisation] = relationship(foreign_keys=[commissioner_id])
    managing_organisation: Mapped[Organisation | None] = relationship(
        foreign_keys=[managing_organisation_id]
    )
    plan_lines: Mapped[list[PlanLine]] = relationship(
        back_populates="budget", order_by="PlanLine.created_at, PlanLine.id"
    )


class PlanLine(PublicIdMixin, BalanceMixin, Base):
    """A care-plan line: an agreed outcome, the categories it covers (each with its
    descendants) and the money set aside for it (its allocations and adjustments)."""

    __tablename__ = "budget_plan_lines"
    __table_args__ = _balance_checks()
    id_prefix = "pln"

    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id"), index=True)
    description: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    budget: Mapped[Budget] = relationship(back_populates="plan_lines")
    categories: Mapped[list[Category]] = relationship(
        secondary="budget_plan_line_categories", lazy="selectin", order_by="Category.code"
    )

    @property
    def remaining_pence(self) -> int:
        return self.available_pence


class PlanLineCategory(Base):
    __tablename__ = "budget_plan_line_categories"

    plan_line_id: Mapped[str] = mapped_column(ForeignKey("budget_plan_lines.id"), primary_key=True)
    category_id: Mapped[str] = mapped_column(ForeignKey("categories.id"), primary_key=True)


class LedgerEntry(PublicIdMixin, Base):
    """One immutable movement of budget money. Never updated, never deleted: the ORM refuses
    (below) and so does the database (triggers in the migration). Corrections are new entries.

    ``amount_pence`` is positive for every type except ``adjustment`` (signed, never zero).
    ``refers_to_id``: the hold a release or capture settles, the capture a refund returns.
    ``settles_hold_id`` is set on the one entry that settles a hold (its release or its
    capture); it is unique, so a hold is settled exactly once whatever the race.
    """

    __tablename__ = "budget_ledger_entries"
    __table_args__ = (
        UniqueConstraint("budget_id", "seq"),
        UniqueConstraint("settles_hold_id"),
        CheckConstraint(
            "(entry_type = 'adjustment' AND amount_pence <> 0) OR amount_pence > 0",
            name="amount_sign",
        ),
        CheckConstraint(
            "(entry_type IN ('release', 'capture', 'refund')) = (refers_to_id IS NOT NULL)",
            name="refers_to_when_settling",
        ),
        CheckConstraint("seq >= 1", name="seq_positive"),
        Index("ix_budget_ledger_entries_budget_created", "budget_id", "created_at"),
        Index("ix_budget_ledger_entries_refers_to", "refers_to_id"),
    )
    id_prefix = "led"

    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id"))
    seq: Mapped[int] = mapped_column(Integer)
    entry_type: Mapped[EntryType] = mapped_column(enum_column(EntryType, "ledger_entry_type"))
    amount_pence: Mapped[int] = mapped_column(Integer)
    plan_line_id: Mapped[str | None] = mapped_column(ForeignKey("budget_plan_lines.id"))
    category_id: Mapped[str | None] = mapped_column(ForeignKey("categories.id"))
    order_ref: Mapped[str | None] = mapped_column(String(100), index=True)
    refers_to_id: Mapped[str | None] = mapped_column(ForeignKey("budget_ledger_entries.id"))
    settles_hold_id: Mapped[str | None] = mapped_column(ForeignKey("budget_ledger_entries.id"))
    actor_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    actor_label: Mapped[str] = mapped_column(String(254))
    reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    plan_line: Mapped[PlanLine | None] = relationship(lazy="joined")
    category: Mapped[Category | None] = relationship(lazy="joined")

    @property
    def effect_pence(self) -> int:
        """How much this entry changed the budget's available balance."""
        return entry_effect(self.entry_type, self.amount_pence)


def entry_effect(entry_type: EntryType | str, amount_pence: int) -> int:
    """The change an entry makes to ``available``. A capture turns held money into spent money
    (the remainder of a partial capture is a separate release), so it changes nothing."""
    entry_type = EntryType(entry_type)
    if entry_type == EntryType.HOLD:
        return -amount_pence
    if entry_type == EntryType.CAPTURE:
        return 0
    return amount_pence  # allocation, adjustment (signed), release, refund


class Approval(PublicIdMixin, Base):
    """A spend waiting for the budget manager: an order above the approval threshold or with an
    item outside the care plan. ``subject_type``/``subject_ref`` name what waits (``order`` and
    the order's reference); a decision handler registered for the subject type is called in the
    same transaction as the decision (see ``budgets.approvals``)."""

    __tablename__ = "budget_approvals"
    __table_args__ = (
        UniqueConstraint("budget_id", "subject_type", "subject_ref"),
        CheckConstraint("amount_pence >= 0", name="amount_not_negative"),
        Index("ix_budget_approvals_status_requested", "status", "requested_at", "id"),
    )
    id_prefix = "apr"

    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id"), index=True)
    subject_type: Mapped[str] = mapped_column(String(32))
    subject_ref: Mapped[str] = mapped_column(String(100))
    amount_pence: Mapped[int] = mapped_column(Integer)
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    reasons: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    status: Mapped[ApprovalStatus] = mapped_column(
        enum_column(ApprovalStatus, "approval_status"), default=ApprovalStatus.PENDING
    )
    requested_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    requested_by_label: Mapped[str] = mapped_column(String(254))
    requested_at: Mapped[datetime] = mapped_column(default=utcnow)
    decided_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    decided_by_label: Mapped[str | None] = mapped_column(String(254))
    decided_at: Mapped[datetime | None]
    decision_reason: Mapped[str | None] = mapped_column(String(500))

    budget: Mapped[Budget] = relationship(lazy="joined")


# --- append-only, in the ORM ------------------------------------------------------------------


class LedgerIsAppendOnly(RuntimeError):
    """Raised when code tries to change or delete a ledger entry."""


def _refuse_change(_mapper: Any, _connection: Any, target: LedgerEntry) -> None:
    raise LedgerIsAppendOnly(
        f"ledger entry {target.id} is immutable: corrections are new entries (adjustments)"
    )


event.listen(LedgerEntry, "before_update", _refuse_change)
event.listen(LedgerEntry, "before_delete", _refuse_change)


@event.listens_for(Session, "do_orm_execute")
def _refuse_bulk_change(state: Any) -> None:
    """``session.execute(update(LedgerEntry)...)`` / ``delete(...)`` bypass the mapper events."""
    mapper = state.bind_mapper
    if (state.is_update or state.is_delete) and mapper is not None and mapper.class_ is LedgerEntry:
        raise LedgerIsAppendOnly("ledger entries are immutable: corrections are new entries")
