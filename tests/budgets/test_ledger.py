"""Ledger operations and their limits, through the service; verify_ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from marketplace.accounts.models import OrgType, Role
from marketplace.budgets import ledger, service
from marketplace.budgets.models import Budget, EntryType, LedgerEntry, ManagementType
from marketplace.db import begin_write, utcnow
from marketplace.errors import Conflict, Forbidden, ValidationFailed
from tests.budgets.conftest import DIGITAL_LINE, WHEELCHAIR_LINE


def _run(session_factory, fn, *args, **kwargs):
    """Run one ledger operation in its own write transaction; return its result."""
    with session_factory() as session:
        begin_write(session)
        try:
            result = fn(session, *args, **kwargs)
            session.commit()
            return result
        except BaseException:
            session.rollback()
            raise


def _budget(session, budget_id):
    return session.get(Budget, budget_id, populate_existing=True)


def op(session_factory, actor, name, budget_id, *args, **kwargs):
    def call(session):
        return getattr(ledger, name)(session, actor, _budget(session, budget_id), *args, **kwargs)

    return _run(session_factory, call)


def balances(session_factory, budget_id):
    with session_factory() as session:
        b = _budget(session, budget_id)
        lines = {pl.id: pl.remaining_pence for pl in b.plan_lines}
        return b.available_pence, b.held_pence, b.spent_pence, lines


def verified(session_factory, budget_id):
    with session_factory() as session:
        result = ledger.verify_ledger(session, budget_id)
    assert result.ok, result.problems
    return result


@pytest.fixture
def budget(world):
    return world.budget(allocation_pence=10_000, plan_lines=[WHEELCHAIR_LINE, DIGITAL_LINE])


@pytest.fixture
def mgr(world):
    return world.manager.principal


def test_allocations_from_set_up_are_on_the_ledger(session_factory, budget):
    available, held, spent, lines = balances(session_factory, budget.id)
    assert available == 10_000 + 150_000 + 20_000
    assert (held, spent) == (0, 0)
    assert sorted(lines.values()) == [20_000, 150_000]
    result = verified(session_factory, budget.id)
    assert result.entries == 3
    assert result.derived.allocated_pence == 180_000


def test_hold_capture_refund_cycle(session_factory, world, budget, mgr):
    line = world.line_id(budget)
    held = op(session_factory, mgr, "hold", budget.id, 60_000, plan_line_id=line, order_ref="o-1")
    assert (held.entry_type, held.seq) == (EntryType.HOLD, 4)
    available, held_total, spent, lines = balances(session_factory, budget.id)
    assert (available, held_total, spent, lines[line]) == (120_000, 60_000, 0, 90_000)

    result = op(session_factory, mgr, "capture", budget.id, held.id)
    assert (result.capture.amount_pence, result.release) == (60_000, None)
    available, held_total, spent, lines = balances(session_factory, budget.id)
    assert (available, held_total, spent, lines[line]) == (120_000, 0, 60_000, 90_000)

    refund = op(
        session_factory, mgr, "refund", budget.id, result.capture.id, 15_000, reason="returned"
    )
    assert (refund.refers_to_id, refund.plan_line_id) == (result.capture.id, line)
    available, held_total, spent, lines = balances(session_factory, budget.id)
    assert (available, held_total, spent, lines[line]) == (135_000, 0, 45_000, 105_000)
    verified(session_factory, budget.id)


def test_partial_capture_releases_the_rest(session_factory, world, budget, mgr):
    line = world.line_id(budget)
    held = op(session_factory, mgr, "hold", budget.id, 50_000, plan_line_id=line)
    result = op(session_factory, mgr, "capture", budget.id, held.id, 42_000)
    assert result.capture.amount_pence == 42_000
    assert result.release.entry_type == EntryType.RELEASE
    assert result.release.amount_pence == 8_000
    assert result.release.refers_to_id == held.id
    available, held_total, spent, lines = balances(session_factory, budget.id)
    assert (available, held_total, spent, lines[line]) == (180_000 - 42_000, 0, 42_000, 108_000)
    verified(session_factory, budget.id)


def test_capture_never_exceeds_the_hold(session_factory, budget, mgr):
    held = op(session_factory, mgr, "hold", budget.id, 1_000)
    with pytest.raises(ValidationFailed) as error:
        op(session_factory, mgr, "capture", budget.id, held.id, 1_001)
    assert error.value.code == "capture-exceeds-hold"
    verified(session_factory, budget.id)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("release", "release"),
        ("release", "capture"),
        ("capture", "release"),
        ("capture", "capture"),
    ],
)
def test_a_hold_is_settled_exactly_once(session_factory, budget, mgr, first, second):
    held = op(session_factory, mgr, "hold", budget.id, 2_500)
    op(session_factory, mgr, first, budget.id, held.id)
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, second, budget.id, held.id)
    assert error.value.code == "hold-already-settled"
    verified(session_factory, budget.id)


def test_settling_a_hold_twice_is_refused_by_the_database_too(session_factory, budget, mgr):
    held = op(session_factory, mgr, "hold", budget.id, 2_500)
    release = op(session_factory, mgr, "release", budget.id, held.id)
    with session_factory() as session:
        session.add(
            LedgerEntry(
                budget_id=budget.id,
                seq=99,
                entry_type=EntryType.CAPTURE,
                amount_pence=2_500,
                refers_to_id=held.id,
                settles_hold_id=held.id,
                actor_label="x",
            )
        )
        with pytest.raises(IntegrityError):
            session.flush()
    assert release.settles_hold_id == held.id


def test_refunds_never_exceed_the_capture(session_factory, budget, mgr):
    held = op(session_factory, mgr, "hold", budget.id, 3_000)
    captured = op(session_factory, mgr, "capture", budget.id, held.id).capture
    op(session_factory, mgr, "refund", budget.id, captured.id, 2_000)
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "refund", budget.id, captured.id, 1_001)
    assert error.value.code == "refund-exceeds-capture"
    assert error.value.extensions["refundable_pence"] == 1_000
    op(session_factory, mgr, "refund", budget.id, captured.id, 1_000)
    result = verified(session_factory, budget.id)
    assert result.derived.refunded_pence == 3_000


def test_refund_must_name_a_capture_of_this_budget(session_factory, world, budget, mgr):
    held = op(session_factory, mgr, "hold", budget.id, 3_000)
    with pytest.raises(ValidationFailed):
        op(session_factory, mgr, "refund", budget.id, held.id, 100)
    other = world.budget(allocation_pence=5_000)
    other_hold = op(session_factory, mgr, "hold", other.id, 1_000)
    with pytest.raises(ValidationFailed):
        op(session_factory, mgr, "release", budget.id, other_hold.id)


def test_hold_beyond_available_is_refused_naming_the_shortfall(session_factory, world, mgr):
    budget = world.budget(allocation_pence=10_000)
    op(session_factory, mgr, "hold", budget.id, 7_000)
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "hold", budget.id, 4_000)
    assert error.value.code == "insufficient-budget"
    assert error.value.extensions == {
        "requested_pence": 4_000,
        "available_pence": 3_000,
        "shortfall_pence": 1_000,
    }
    assert "£10.00 short" in error.value.detail
    verified(session_factory, budget.id)


def test_hold_beyond_the_plan_line_is_refused(session_factory, world, budget, mgr):
    line = world.line_id(budget, 1)  # the digital line: £200
    op(session_factory, mgr, "hold", budget.id, 15_000, plan_line_id=line)
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "hold", budget.id, 6_000, plan_line_id=line)
    assert error.value.code == "plan-line-exceeded"
    assert error.value.extensions["shortfall_pence"] == 1_000
    _, held, _, _ = balances(session_factory, budget.id)
    assert held == 15_000  # the refused hold's budget move was rolled back with it
    verified(session_factory, budget.id)


@pytest.mark.parametrize("action", ["suspend", "close"])
def test_a_suspended_or_closed_budget_cannot_spend(session_factory, world, budget, mgr, action):
    _run(
        session_factory,
        lambda s: service.change_status(s, mgr, _budget(s, budget.id), action, "Review"),
    )
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "hold", budget.id, 100)
    assert error.value.code == "budget-not-active"


@pytest.mark.parametrize("shift", [timedelta(days=10), timedelta(days=-400)])
def test_a_budget_outside_its_period_cannot_spend(session_factory, world, mgr, shift):
    today = utcnow().date()
    budget = world.budget(
        allocation_pence=5_000, start=today + shift, end=today + shift + timedelta(days=30)
    )
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "hold", budget.id, 100)
    assert error.value.code == "outside-budget-period"


def test_adjustments_never_take_available_below_zero(session_factory, world, mgr):
    line_spec = {**DIGITAL_LINE, "amount_pence": 3_000}
    budget = world.budget(allocation_pence=10_000, plan_lines=[line_spec])
    line = world.line_id(budget)
    op(session_factory, mgr, "hold", budget.id, 9_000)  # available 13,000 -> 4,000
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "adjust", budget.id, -4_001, reason="Clawback")
    assert error.value.code == "insufficient-budget"
    op(session_factory, mgr, "adjust", budget.id, -4_000, reason="Clawback of unspent money")
    with pytest.raises(Conflict) as error:  # the line has 3,000 but the budget has nothing
        op(session_factory, mgr, "adjust", budget.id, -1, reason="x", plan_line_id=line)
    assert error.value.code == "insufficient-budget"
    op(session_factory, mgr, "adjust", budget.id, 5_000, reason="Correction")
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "adjust", budget.id, -3_001, reason="x", plan_line_id=line)
    assert error.value.code == "plan-line-exceeded"
    op(session_factory, mgr, "adjust", budget.id, -3_000, reason="Plan review", plan_line_id=line)
    available, held, _, lines = balances(session_factory, budget.id)
    assert (available, held, lines[line]) == (2_000, 9_000, 0)
    verified(session_factory, budget.id)


def test_adjustment_needs_a_reason_and_a_non_zero_amount(session_factory, budget, mgr):
    with pytest.raises(ValidationFailed):
        op(session_factory, mgr, "adjust", budget.id, 100, reason="  ")
    with pytest.raises(ValidationFailed):
        op(session_factory, mgr, "adjust", budget.id, 0, reason="nothing")


@pytest.mark.parametrize("amount", [0, -1, 2.5, "100", True, None])
def test_amounts_are_positive_integers(session_factory, budget, mgr, amount):
    with pytest.raises(ValidationFailed):
        op(session_factory, mgr, "hold", budget.id, amount)


def test_allocation_to_a_closed_budget_is_refused(session_factory, budget, mgr):
    _run(
        session_factory,
        lambda s: service.change_status(s, mgr, _budget(s, budget.id), "close", "Ended"),
    )
    with pytest.raises(Conflict) as error:
        op(session_factory, mgr, "allocate", budget.id, 100)
    assert error.value.code == "budget-closed"


def test_closing_needs_every_hold_settled(session_factory, budget, mgr):
    held = op(session_factory, mgr, "hold", budget.id, 100)
    close = lambda s: service.change_status(s, mgr, _budget(s, budget.id), "close", "Ended")  # noqa: E731
    with pytest.raises(Conflict) as error:
        _run(session_factory, close)
    assert error.value.code == "budget-has-open-holds"
    op(session_factory, mgr, "release", budget.id, held.id)
    assert _run(session_factory, close).status.value == "closed"


# --- who may spend ---------------------------------------------------------------------------


def test_can_spend_follows_the_management_type(session_factory, factory, world):
    third_party_org = factory.org(OrgType.COMMISSIONER)
    third_party_user = factory.actor(Role.BUDGET_MANAGER, third_party_org)
    rep = world.other_holder
    direct = world.budget(
        management_type=ManagementType.DIRECT_PAYMENT, representative_id=rep.user.id
    )
    third = world.budget(
        management_type=ManagementType.THIRD_PARTY, managing_organisation_id=third_party_org.id
    )
    notional = world.budget()
    other_manager = factory.actor(Role.BUDGET_MANAGER)
    h, m, r = world.holder.principal, world.manager.principal, rep.principal
    t, o = third_party_user.principal, other_manager.principal
    assert [service.can_spend(a, direct) for a in (h, r, m, t, o)] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert [service.can_spend(a, third) for a in (h, r, m, t, o)] == [
        False,
        False,
        False,
        True,
        False,
    ]
    assert [service.can_spend(a, notional) for a in (h, r, m, t, o)] == [
        False,
        False,
        True,
        False,
        False,
    ]


def test_a_hold_by_someone_who_may_not_spend_is_403(session_factory, world, budget):
    with pytest.raises(Forbidden) as error:
        op(session_factory, world.holder.principal, "hold", budget.id, 100)
    assert error.value.code == "not-allowed-to-spend"


# --- verify_ledger and the database's own guards ----------------------------------------------


def test_verify_ledger_finds_a_cache_that_disagrees(session_factory, budget, mgr):
    op(session_factory, mgr, "hold", budget.id, 1_000)
    with session_factory.begin() as session:
        session.execute(
            update(Budget).where(Budget.id == budget.id).values(held_pence=Budget.held_pence - 500)
        )
    with session_factory() as session:
        result = ledger.verify_ledger(session, budget.id)
    assert not result.ok
    assert any("budget cache" in p for p in result.problems)


def test_the_database_refuses_a_negative_cached_balance(session_factory, world):
    budget = world.budget(allocation_pence=1_000)
    with session_factory.begin() as session, pytest.raises(IntegrityError):
        session.execute(
            text("UPDATE budgets SET held_pence = held_pence + 1001 WHERE id = :id"),
            {"id": budget.id},
        )


def test_every_ledger_operation_is_audited(session_factory, budget, mgr):
    from sqlalchemy import select

    from marketplace.audit import AuditEvent

    held = op(session_factory, mgr, "hold", budget.id, 1_000)
    op(session_factory, mgr, "capture", budget.id, held.id, 900)
    with session_factory() as session:
        actions = session.scalars(
            select(AuditEvent.action).where(AuditEvent.object_id == budget.id)
        ).all()
    for action in (
        "budget.create",
        "budget.plan_line.create",
        "budget.allocate",
        "budget.hold",
        "budget.capture",
    ):
        assert action in actions
