"""The budget ledger: every movement of budget money, and the only code that moves it.

Each operation, in the caller's transaction:

1. writes its audit event (before taking any lock, so locks are held briefly);
2. moves the plan line's cached balance, when the entry has a plan line, with a guarded
   single-statement UPDATE (``... WHERE id = :line AND remaining >= :amount``);
3. moves the budget's cached balance with a guarded single-statement UPDATE
   (``... WHERE id = :id AND available >= :amount [AND status = 'active' AND today in period]``)
   that also hands out the entries' sequence numbers (``entry_count``, via RETURNING);
4. inserts the ledger entries with those sequence numbers.

A guard that matches no row means the money is not there (or the budget may not spend): the
operation raises a 409 ``Conflict`` naming the shortfall, and the caller's transaction must be
rolled back (the web layer does this for every error response). The guarded UPDATE is atomic on
both databases: on PostgreSQL the row lock serialises concurrent moves and the WHERE clause is
re-checked against the committed row; on SQLite writers hold the database lock from ``BEGIN
IMMEDIATE``. Every operation locks at most one plan line, always before the budget row, so moves
cannot deadlock.

On PostgreSQL, steps 3 and 4 of an allocation, adjustment or hold are one statement (``WITH
moved AS (UPDATE budgets ... RETURNING entry_count) INSERT INTO budget_ledger_entries ... SELECT
... FROM moved``): the budget row is locked for one round trip and the commit, no longer than a
bare guarded UPDATE would hold it. Elsewhere they are two statements.

Releases, captures and refunds read after taking the budget row lock (is the hold still open?
how much of the capture was refunded?), so those reads are serialised with every other move on
the same budget. A hold's one settling entry carries ``settles_hold_id``, unique in the
database, as a second line of defence.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import Session, make_transient_to_detached

from .. import audit
from ..accounts.service import Principal
from ..db import new_id, utcnow
from ..errors import Conflict, ValidationFailed
from ..money import format_gbp
from .models import (
    BALANCE_FIELDS,
    Budget,
    BudgetStatus,
    EntryType,
    LedgerEntry,
    PlanLine,
)

MAX_AMOUNT_PENCE = 10**11  # £1bn: far above any budget, far below integer overflow
REASON_MAX = 500


@dataclass(frozen=True)
class CaptureResult:
    capture: LedgerEntry
    release: LedgerEntry | None  # the rest of a partial capture, released at once


def _positive(amount: int, name: str = "amount_pence") -> int:
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValidationFailed(
            "Amounts are whole numbers of pence.", errors={name: ["Not an integer."]}
        )
    if not 0 < amount <= MAX_AMOUNT_PENCE:
        raise ValidationFailed(
            "The amount must be a positive number of pence.",
            errors={name: [f"Must be between 1 and {MAX_AMOUNT_PENCE}."]},
        )
    return amount


def clean_reason(reason: str | None, *, required: bool = False) -> str | None:
    text = (reason or "").strip()
    if required and not text:
        raise ValidationFailed("A reason is required.", errors={"reason": ["Give a reason."]})
    if len(text) > REASON_MAX:
        raise ValidationFailed(
            "The reason is too long.", errors={"reason": [f"At most {REASON_MAX} characters."]}
        )
    return text or None


def _plan_line(session: Session, budget: Budget, plan_line_id: str | None) -> PlanLine | None:
    if plan_line_id is None:
        return None
    line = session.get(PlanLine, plan_line_id)
    if line is None or line.budget_id != budget.id:
        raise ValidationFailed(
            "That plan line is not part of this budget.",
            code="plan-line-not-found",
            errors={"plan_line_id": [f"No plan line {plan_line_id!r} on this budget."]},
        )
    return line


def _get_entry(session: Session, budget: Budget, entry_id: str, kind: EntryType) -> LedgerEntry:
    entry = session.get(LedgerEntry, entry_id)
    if entry is None or entry.budget_id != budget.id or entry.entry_type != kind:
        raise ValidationFailed(
            f"No {kind.value} {entry_id!r} on this budget.",
            code=f"{kind.value}-not-found",
            errors={f"{kind.value}_id": [f"No {kind.value} with this id on this budget."]},
        )
    return entry


# --- the guarded updates ------------------------------------------------------------------------


# The statements are built once per shape and cached, with every value a bound parameter: a
# hold then costs the database round trips and little else.


@dataclass(frozen=True)
class _Shape:
    """What a guarded UPDATE looks like: which totals move, and which guards apply."""

    deltas: tuple[str, ...]
    need: bool = False  # available >= :need
    release: bool = False  # held >= :release (held money going out)
    refund: bool = False  # refunded + :refund <= captured
    spendable: bool = False  # active and :today within the period
    open_for_changes: bool = False  # not closed

    @classmethod
    def of(cls, deltas: dict[str, int], need: int, **flags: bool) -> _Shape:
        return cls(
            deltas=tuple(sorted(deltas)),
            need=need > 0,
            release=deltas.get("held_pence", 0) < 0,
            refund=deltas.get("refunded_pence", 0) > 0,
            **flags,
        )

    @staticmethod
    def params(deltas: dict[str, int], need: int) -> dict[str, int]:
        params = {f"d_{name}": delta for name, delta in deltas.items()}
        params["need"] = need
        params["release"] = -deltas.get("held_pence", 0)
        params["refund"] = deltas.get("refunded_pence", 0)
        return params


def _guarded_update(model: type[Budget] | type[PlanLine], shape: _Shape):
    table = model.__table__
    c = table.c
    stmt = update(table).where(c.id == bindparam("row_id"))
    if shape.need:
        stmt = stmt.where(
            c.allocated_pence
            + c.adjusted_pence
            + c.refunded_pence
            - c.held_pence
            - c.captured_pence
            >= bindparam("need")
        )
    if shape.release:
        stmt = stmt.where(c.held_pence >= bindparam("release"))
    if shape.refund:
        stmt = stmt.where(c.refunded_pence + bindparam("refund") <= c.captured_pence)
    values = {name: c[name] + bindparam(f"d_{name}") for name in shape.deltas}
    if model is Budget:
        if shape.spendable:
            today = bindparam("today", type_=c.period_start.type)
            stmt = stmt.where(
                c.status == BudgetStatus.ACTIVE.value,
                c.period_start <= today,
                c.period_end >= today,
            )
        if shape.open_for_changes:
            stmt = stmt.where(c.status != BudgetStatus.CLOSED.value)
        values["entry_count"] = c.entry_count + bindparam("entries")
        values["updated_at"] = bindparam("now", type_=c.updated_at.type)
        return stmt.values(values).returning(c.entry_count)
    return stmt.values(values)


@lru_cache(maxsize=128)
def _budget_statement(shape: _Shape):
    return _guarded_update(Budget, shape)


@lru_cache(maxsize=128)
def _line_statement(shape: _Shape):
    return _guarded_update(PlanLine, shape)


@lru_cache(maxsize=128)
def _record_statement(shape: _Shape):
    """PostgreSQL: ``WITH moved AS (UPDATE budgets ... RETURNING entry_count) INSERT INTO
    budget_ledger_entries (...) SELECT :values..., moved.entry_count FROM moved RETURNING seq``."""
    moved = _budget_statement(shape).cte("moved")
    table = LedgerEntry.__table__
    columns = [c for c in table.c if c.key != "seq"]
    return (
        insert(table)
        .from_select(
            [*(c.key for c in columns), "seq"],
            select(*(bindparam(f"e_{c.key}", type_=c.type) for c in columns), moved.c.entry_count),
        )
        .add_cte(moved)
        .returning(table.c.seq)
    )


def _budget_params(budget: Budget, deltas: dict[str, int], need: int, entries: int) -> dict:
    return {
        **_Shape.params(deltas, need),
        "row_id": budget.id,
        "entries": entries,
        "now": utcnow(),
        "today": utcnow().date(),
    }


def _expire(session: Session, budget: Budget) -> None:
    session.expire(budget, [*BALANCE_FIELDS, "entry_count", "updated_at", "status"])


def _move_budget(
    session: Session, budget: Budget, deltas: dict[str, int], *, entries: int, recheck
) -> int:
    """Move the budget row for a release, capture or refund, then run ``recheck`` (which reads
    serialised, now that this transaction holds the row). Returns the last sequence number
    handed out. The guards refuse only if a concurrent move got there first (``recheck`` then
    says so) or the cache disagrees with the ledger."""
    stmt = _budget_statement(_Shape.of(deltas, 0))
    seq = session.execute(stmt, _budget_params(budget, deltas, 0, entries)).scalar_one_or_none()
    _expire(session, budget)
    recheck()
    if seq is None:
        raise _mismatch(budget)
    return seq


def _move_budget_and_record(
    session: Session,
    budget: Budget,
    deltas: dict[str, int],
    entry: LedgerEntry,
    *,
    need: int = 0,
    spendable: bool = False,
    open_for_changes: bool = False,
) -> bool:
    """The budget row's guarded UPDATE and the entry's INSERT, in one statement on PostgreSQL.
    False when a guard refused (then nothing was written)."""
    shape = _Shape.of(deltas, need, spendable=spendable, open_for_changes=open_for_changes)
    params = _budget_params(budget, deltas, need, 1)
    if session.get_bind().dialect.name == "postgresql":
        for column in LedgerEntry.__table__.c:
            if column.key != "seq":
                params[f"e_{column.key}"] = getattr(entry, column.key)
        seq = session.execute(_record_statement(shape), params).scalar_one_or_none()
        _expire(session, budget)
        if seq is None:
            return False
        entry.seq = seq
        make_transient_to_detached(entry)  # written above: the session takes it as loaded
        session.add(entry)
        return True
    seq = session.execute(_budget_statement(shape), params).scalar_one_or_none()
    _expire(session, budget)
    if seq is None:
        return False
    entry.seq = seq
    session.add(entry)
    session.flush()
    return True


def _move_line(session: Session, line: PlanLine, deltas: dict[str, int], *, need: int = 0) -> bool:
    """The plan line's guarded UPDATE (always taken before the budget row's)."""
    params = {**_Shape.params(deltas, need), "row_id": line.id}
    result = session.execute(_line_statement(_Shape.of(deltas, need)), params)
    session.expire(line, list(BALANCE_FIELDS))
    return result.rowcount == 1


def _budget_refusal(session: Session, budget: Budget, amount: int, *, spending: bool) -> Conflict:
    """Why the budget's guarded update matched no row (read after the fact)."""
    session.refresh(budget)
    today = utcnow().date()
    if spending and budget.status != BudgetStatus.ACTIVE:
        return Conflict(
            f"This budget is {budget.status.value} and cannot be spent from.",
            code="budget-not-active",
            budget_status=budget.status.value,
        )
    if not spending and budget.status == BudgetStatus.CLOSED:
        return Conflict("This budget is closed; nothing more can change.", code="budget-closed")
    if spending and not budget.period_start <= today <= budget.period_end:
        return Conflict(
            f"This budget runs from {budget.period_start} to {budget.period_end}; it cannot be "
            "spent from outside that period.",
            code="outside-budget-period",
        )
    available = budget.available_pence
    shortfall = amount - available
    return Conflict(
        f"Not enough money left in the budget: {format_gbp(amount)} needed, "
        f"{format_gbp(max(available, 0))} available, {format_gbp(shortfall)} short.",
        code="insufficient-budget",
        requested_pence=amount,
        available_pence=available,
        shortfall_pence=shortfall,
    )


def _line_refusal(session: Session, line: PlanLine, amount: int) -> Conflict:
    session.refresh(line)
    remaining = line.remaining_pence
    shortfall = amount - remaining
    return Conflict(
        f"Not enough left on the care-plan line '{line.description}': {format_gbp(amount)} "
        f"needed, {format_gbp(max(remaining, 0))} left, {format_gbp(shortfall)} short.",
        code="plan-line-exceeded",
        plan_line_id=line.id,
        requested_pence=amount,
        remaining_pence=remaining,
        shortfall_pence=shortfall,
    )


def _mismatch(budget: Budget) -> Conflict:
    return Conflict(
        "The budget's balance does not match its ledger; nothing was changed.",
        code="ledger-mismatch",
        budget_id=budget.id,
    )


def _entry(
    budget: Budget, actor: Principal, entry_type: EntryType, amount: int, **fields
) -> LedgerEntry:
    """A new entry (its ``seq`` comes from the budget's guarded update)."""
    values = {
        "plan_line_id": None,
        "category_id": None,
        "order_ref": None,
        "refers_to_id": None,
        "settles_hold_id": None,
        "reason": None,
        **fields,
    }
    return LedgerEntry(
        id=values.pop("id", None) or new_id(LedgerEntry.id_prefix),
        budget_id=budget.id,
        seq=None,
        entry_type=entry_type,
        amount_pence=amount,
        actor_user_id=actor.user_id,
        actor_label=actor.label,
        created_at=utcnow(),
        **values,
    )


def _audit(session: Session, actor: Principal, budget: Budget, action: str, **details) -> None:
    audit.record_now(session, actor, f"budget.{action}", "budget", budget.id, after=details)


# --- operations ---------------------------------------------------------------------------------


def allocate(
    session: Session,
    actor: Principal,
    budget: Budget,
    amount_pence: int,
    *,
    plan_line_id: str | None = None,
    reason: str | None = None,
) -> LedgerEntry:
    """Add money to the budget (and to a plan line when given)."""
    amount = _positive(amount_pence)
    reason = clean_reason(reason)
    line = _plan_line(session, budget, plan_line_id)
    entry = _entry(
        budget, actor, EntryType.ALLOCATION, amount, plan_line_id=plan_line_id, reason=reason
    )
    _audit(
        session,
        actor,
        budget,
        "allocate",
        entry_id=entry.id,
        amount_pence=amount,
        plan_line_id=plan_line_id,
        reason=reason,
    )
    deltas = {"allocated_pence": amount}
    if line is not None:
        _move_line(session, line, deltas)
    if not _move_budget_and_record(session, budget, deltas, entry, open_for_changes=True):
        raise _budget_refusal(session, budget, amount, spending=False)
    return entry


def adjust(
    session: Session,
    actor: Principal,
    budget: Budget,
    amount_pence: int,
    *,
    reason: str,
    plan_line_id: str | None = None,
) -> LedgerEntry:
    """A signed correction with a reason (e.g. a clawback of unspent money). One that would
    take the budget's, or the plan line's, available balance below zero is refused."""
    if isinstance(amount_pence, bool) or not isinstance(amount_pence, int) or amount_pence == 0:
        raise ValidationFailed(
            "An adjustment is a non-zero whole number of pence.",
            errors={"amount_pence": ["Must be a non-zero integer."]},
        )
    _positive(abs(amount_pence))
    reason = clean_reason(reason, required=True)
    line = _plan_line(session, budget, plan_line_id)
    need = -amount_pence if amount_pence < 0 else 0
    entry = _entry(
        budget, actor, EntryType.ADJUSTMENT, amount_pence, plan_line_id=plan_line_id, reason=reason
    )
    _audit(
        session,
        actor,
        budget,
        "adjust",
        entry_id=entry.id,
        amount_pence=amount_pence,
        plan_line_id=plan_line_id,
        reason=reason,
    )
    deltas = {"adjusted_pence": amount_pence}
    if line is not None and not _move_line(session, line, deltas, need=need):
        raise _line_refusal(session, line, need)
    if not _move_budget_and_record(session, budget, deltas, entry, need=need):
        raise _budget_refusal(session, budget, need, spending=False)
    return entry


def hold(
    session: Session,
    actor: Principal,
    budget: Budget,
    amount_pence: int,
    *,
    plan_line_id: str | None = None,
    category_id: str | None = None,
    order_ref: str | None = None,
    reason: str | None = None,
) -> LedgerEntry:
    """Reserve money for a spend (an order being placed). Only someone who may spend this
    budget (``can_spend``) may hold; the budget must be active and within its period; the
    amount must fit both the budget's available balance and the plan line's remaining amount.
    """
    from .service import require_can_spend

    require_can_spend(actor, budget)
    amount = _positive(amount_pence)
    reason = clean_reason(reason)
    line = _plan_line(session, budget, plan_line_id)
    entry = _entry(
        budget,
        actor,
        EntryType.HOLD,
        amount,
        plan_line_id=plan_line_id,
        category_id=category_id,
        order_ref=order_ref,
        reason=reason,
    )
    _audit(
        session,
        actor,
        budget,
        "hold",
        entry_id=entry.id,
        amount_pence=amount,
        plan_line_id=plan_line_id,
        order_ref=order_ref,
    )
    deltas = {"held_pence": amount}
    if line is not None and not _move_line(session, line, deltas, need=amount):
        raise _line_refusal(session, line, amount)
    if not _move_budget_and_record(session, budget, deltas, entry, need=amount, spendable=True):
        raise _budget_refusal(session, budget, amount, spending=True)
    return entry


def _require_open(session: Session, hold_entry: LedgerEntry) -> None:
    settled = session.scalar(
        select(LedgerEntry.entry_type).where(LedgerEntry.settles_hold_id == hold_entry.id)
    )
    if settled is not None:
        verb = "released" if settled == EntryType.RELEASE else "captured"
        raise Conflict(
            f"This hold was already {verb}; a hold is settled exactly once.",
            code="hold-already-settled",
            hold_id=hold_entry.id,
        )


def _settle_line(session: Session, held: LedgerEntry, deltas: dict[str, int]) -> None:
    """Move the hold's plan line for its release or capture. A refusal means the hold was
    settled meanwhile (we waited for the line's lock) or the cache disagrees with the ledger."""
    if held.plan_line is not None and not _move_line(session, held.plan_line, deltas):
        _require_open(session, held)
        raise _mismatch(held.plan_line.budget)


def release(
    session: Session,
    actor: Principal,
    budget: Budget,
    hold_id: str,
    *,
    reason: str | None = None,
) -> LedgerEntry:
    """Give a whole hold back (order cancelled or rejected)."""
    held = _get_entry(session, budget, hold_id, EntryType.HOLD)
    reason = clean_reason(reason)
    _require_open(session, held)  # the clear answer in the usual case
    entry = _entry(
        budget,
        actor,
        EntryType.RELEASE,
        held.amount_pence,
        plan_line_id=held.plan_line_id,
        category_id=held.category_id,
        order_ref=held.order_ref,
        refers_to_id=held.id,
        settles_hold_id=held.id,
        reason=reason,
    )
    _audit(
        session,
        actor,
        budget,
        "release",
        entry_id=entry.id,
        hold_id=hold_id,
        amount_pence=held.amount_pence,
        reason=reason,
    )
    deltas = {"held_pence": -held.amount_pence}
    _settle_line(session, held, deltas)
    entry.seq = _move_budget(
        session, budget, deltas, entries=1, recheck=lambda: _require_open(session, held)
    )
    session.add(entry)
    session.flush()
    return entry


def capture(
    session: Session,
    actor: Principal,
    budget: Budget,
    hold_id: str,
    amount_pence: int | None = None,
    *,
    reason: str | None = None,
) -> CaptureResult:
    """Spend held money (the order was dispatched). ``amount_pence`` defaults to the whole hold
    and may not exceed it; a partial capture releases the rest in the same transaction."""
    held = _get_entry(session, budget, hold_id, EntryType.HOLD)
    amount = held.amount_pence if amount_pence is None else _positive(amount_pence)
    if amount > held.amount_pence:
        raise ValidationFailed(
            f"A capture cannot exceed its hold ({format_gbp(held.amount_pence)}).",
            code="capture-exceeds-hold",
            errors={"amount_pence": [f"At most {held.amount_pence}."]},
        )
    reason = clean_reason(reason)
    _require_open(session, held)
    rest = held.amount_pence - amount
    common = {
        "plan_line_id": held.plan_line_id,
        "category_id": held.category_id,
        "order_ref": held.order_ref,
        "refers_to_id": held.id,
    }
    captured = _entry(
        budget, actor, EntryType.CAPTURE, amount, settles_hold_id=held.id, reason=reason, **common
    )
    released = None
    if rest:
        released = _entry(
            budget,
            actor,
            EntryType.RELEASE,
            rest,
            reason="Remainder of a partial capture",
            **common,
        )
    _audit(
        session,
        actor,
        budget,
        "capture",
        entry_id=captured.id,
        hold_id=hold_id,
        amount_pence=amount,
        released_pence=rest,
    )
    deltas = {"held_pence": -held.amount_pence, "captured_pence": amount}
    _settle_line(session, held, deltas)
    last = _move_budget(
        session,
        budget,
        deltas,
        entries=2 if rest else 1,
        recheck=lambda: _require_open(session, held),
    )
    captured.seq = last - 1 if rest else last
    session.add(captured)
    if released is not None:
        released.seq = last
        session.add(released)
    session.flush()
    return CaptureResult(capture=captured, release=released)


def refund(
    session: Session,
    actor: Principal,
    budget: Budget,
    capture_id: str,
    amount_pence: int,
    *,
    reason: str | None = None,
) -> LedgerEntry:
    """Credit spent money back (a return after dispatch). Refunds of one capture never add up
    to more than was captured."""
    captured = _get_entry(session, budget, capture_id, EntryType.CAPTURE)
    amount = _positive(amount_pence)
    reason = clean_reason(reason)

    def refundable() -> int:
        already = session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount_pence), 0)).where(
                LedgerEntry.refers_to_id == captured.id,
                LedgerEntry.entry_type == EntryType.REFUND,
            )
        )
        left = captured.amount_pence - already
        if amount > left:
            raise Conflict(
                f"A refund cannot exceed what was captured: {format_gbp(left)} of this capture "
                "can still be refunded.",
                code="refund-exceeds-capture",
                capture_id=captured.id,
                refundable_pence=left,
                requested_pence=amount,
            )
        return left

    refundable()  # the clear answer in the usual case
    entry = _entry(
        budget,
        actor,
        EntryType.REFUND,
        amount,
        plan_line_id=captured.plan_line_id,
        category_id=captured.category_id,
        order_ref=captured.order_ref,
        refers_to_id=captured.id,
        reason=reason,
    )
    _audit(
        session,
        actor,
        budget,
        "refund",
        entry_id=entry.id,
        capture_id=capture_id,
        amount_pence=amount,
        reason=reason,
    )
    deltas = {"refunded_pence": amount}
    if captured.plan_line is not None and not _move_line(session, captured.plan_line, deltas):
        refundable()
        raise _mismatch(budget)
    entry.seq = _move_budget(session, budget, deltas, entries=1, recheck=refundable)
    session.add(entry)
    session.flush()
    return entry


# --- verification -------------------------------------------------------------------------------


@dataclass
class Totals:
    allocated_pence: int = 0
    adjusted_pence: int = 0
    held_pence: int = 0
    captured_pence: int = 0
    refunded_pence: int = 0

    @property
    def available_pence(self) -> int:
        return (
            self.allocated_pence
            + self.adjusted_pence
            + self.refunded_pence
            - self.held_pence
            - self.captured_pence
        )

    def apply(self, entry: LedgerEntry) -> None:
        kind, amount = entry.entry_type, entry.amount_pence
        if kind == EntryType.ALLOCATION:
            self.allocated_pence += amount
        elif kind == EntryType.ADJUSTMENT:
            self.adjusted_pence += amount
        elif kind == EntryType.HOLD:
            self.held_pence += amount
        elif kind == EntryType.RELEASE:
            self.held_pence -= amount
        elif kind == EntryType.CAPTURE:
            self.held_pence -= amount
            self.captured_pence += amount
        elif kind == EntryType.REFUND:
            self.refunded_pence += amount

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in BALANCE_FIELDS}


@dataclass
class LedgerVerification:
    budget_id: str
    entries: int
    derived: Totals
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_ledger(session: Session, budget_id: str) -> LedgerVerification:
    """Recompute the budget's and each plan line's balances from the ledger alone, and check:
    the cached balances match; the sequence is 1..n without gaps; replayed in order, available
    never went below zero, for the budget or any plan line; every hold was settled at most once
    and exactly by its captures and releases; no capture exceeded its hold; no capture was
    refunded beyond what it captured."""
    budget = session.get(Budget, budget_id, populate_existing=True)
    if budget is None:
        raise ValidationFailed(f"No budget {budget_id!r}.", code="budget-not-found")
    entries = list(
        session.scalars(
            select(LedgerEntry).where(LedgerEntry.budget_id == budget_id).order_by(LedgerEntry.seq)
        )
    )
    result = LedgerVerification(budget_id=budget_id, entries=len(entries), derived=Totals())
    problems = result.problems
    lines: dict[str | None, Totals] = defaultdict(Totals)
    by_id = {e.id: e for e in entries}
    settled_by: dict[str, list[LedgerEntry]] = defaultdict(list)  # hold id -> release/capture
    refunded: dict[str, int] = defaultdict(int)

    if [e.seq for e in entries] != list(range(1, len(entries) + 1)):
        problems.append("ledger sequence numbers are not 1..n without gaps")
    if budget.entry_count != len(entries):
        problems.append(f"entry_count is {budget.entry_count} but there are {len(entries)} entries")

    for entry in entries:
        if entry.entry_type in (EntryType.RELEASE, EntryType.CAPTURE):
            target = by_id.get(entry.refers_to_id or "")
            if target is None or target.entry_type != EntryType.HOLD:
                problems.append(f"{entry.id}: {entry.entry_type} does not refer to a hold")
            else:
                settled_by[target.id].append(entry)
        if entry.entry_type == EntryType.REFUND:
            target = by_id.get(entry.refers_to_id or "")
            if target is None or target.entry_type != EntryType.CAPTURE:
                problems.append(f"{entry.id}: refund does not refer to a capture")
            else:
                refunded[target.id] += entry.amount_pence
                if refunded[target.id] > target.amount_pence:
                    problems.append(f"{target.id}: refunded beyond what was captured")
        result.derived.apply(entry)
        if entry.plan_line_id is not None:
            lines[entry.plan_line_id].apply(entry)
            if lines[entry.plan_line_id].available_pence < 0:
                problems.append(f"{entry.id}: plan line {entry.plan_line_id} went below zero")
        if result.derived.available_pence < 0:
            problems.append(f"{entry.id} (seq {entry.seq}): available went below zero")

    for hold_id, settling in settled_by.items():
        hold_entry = by_id[hold_id]
        settles = [e for e in settling if e.settles_hold_id == hold_id]
        if len(settles) != 1:
            problems.append(f"{hold_id}: settled {len(settles)} times")
        total = sum(e.amount_pence for e in settling)
        if total != hold_entry.amount_pence:
            problems.append(
                f"{hold_id}: settled for {total} pence but held {hold_entry.amount_pence}"
            )
        for e in settling:
            if e.plan_line_id != hold_entry.plan_line_id:
                problems.append(f"{e.id}: plan line differs from its hold's")

    cached = {name: getattr(budget, name) for name in BALANCE_FIELDS}
    if cached != result.derived.as_dict():
        problems.append(f"budget cache {cached} != ledger {result.derived.as_dict()}")
    for line in budget.plan_lines:
        session.refresh(line)
        line_cached = {name: getattr(line, name) for name in BALANCE_FIELDS}
        derived = lines.get(line.id, Totals()).as_dict()
        if line_cached != derived:
            problems.append(f"plan line {line.id} cache {line_cached} != ledger {derived}")
    return result
