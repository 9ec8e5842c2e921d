"""Stripe timing out (it accepts the connection and never answers), as opposed to refusing it
(``test_payments``/``test_card_orders`` cover that): the call gives up within its timeout and
answers 503 ``payment-provider-unavailable``; an order or a dispatch that needed it leaves nothing
half-done; once Stripe answers again, the same request (the same Idempotency-Key) completes
exactly once."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select

from marketplace.budgets import ledger
from marketplace.budgets.models import EntryType, LedgerEntry
from marketplace.idempotency import IdempotencyKey
from marketplace.orders.models import CardPayment, Order
from marketplace.orders.payments import PaymentUnavailable, StripeGateway
from tests.orders.conftest import place_top_up, top_up_quote
from tests.orders.test_card_orders import app  # noqa: F401 (the app fixture, paying by localstripe)
from tests.support import assert_problem

TIMEOUT = 0.5


@contextmanager
def silent_stripe() -> Iterator[str]:
    """A loopback address that accepts connections (the kernel's backlog) and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def timing_out_gateway(url: str) -> StripeGateway:
    return StripeGateway("sk_test_marketplace", url, max_network_retries=0, timeout_seconds=TIMEOUT)


@contextmanager
def stripe_timing_out(state) -> Iterator[None]:
    """The app's payment gateway points at a Stripe that never answers, for the block's length."""
    working = state.payment_gateway
    with silent_stripe() as url:
        state.payment_gateway = timing_out_gateway(url)
        try:
            yield
        finally:
            state.payment_gateway = working


def test_a_stripe_call_that_times_out_is_payment_unavailable_within_its_timeout():
    with silent_stripe() as url:
        gateway = timing_out_gateway(url)
        started = time.monotonic()
        with pytest.raises(PaymentUnavailable) as raised:
            gateway.authorise(
                reference="ord_t", amount_pence=100, payment_method="pm_card_visa", description="x"
            )
        elapsed = time.monotonic() - started
    assert raised.value.status == 503
    assert raised.value.headers["Retry-After"]
    assert raised.value.to_dict()["stripe_error"] == "APIConnectionError"
    assert elapsed < TIMEOUT + 2


def top_up_order(client, shop, budget, key):
    quote = top_up_quote(client, shop, budget)
    return lambda: place_top_up(client, shop, quote, key)


def count(db, column, *where) -> int:
    db.rollback()
    return db.scalar(select(func.count(column)).where(*where))


def test_an_order_whose_card_part_times_out_leaves_nothing_then_completes_once(
    app,  # noqa: F811
    shop,
    db,
):
    state = app.extensions["marketplace"]
    client = app.test_client()
    budget = shop.budget(top_up=True, wheelchair_pence=30_000)
    place = top_up_order(client, shop, budget, key="timeout-1")
    with stripe_timing_out(state):
        problem = assert_problem(place(), 503, code="payment-provider-unavailable")
    assert "nothing was charged" in problem["detail"]
    # Nothing of the order survived: no order, no budget hold, the stock back, the key free.
    assert count(db, Order.id) == 0
    assert count(db, LedgerEntry.id, LedgerEntry.entry_type == EntryType.HOLD) == 0
    assert count(db, IdempotencyKey.id) == 0
    assert shop.stock("chair") == 5

    first = place()  # Stripe answers again: the same key now places the order
    assert first.status_code == 201, first.get_json()
    again = place()
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["id"] == first.get_json()["id"]
    assert count(db, Order.id) == 1
    assert count(db, LedgerEntry.id, LedgerEntry.entry_type == EntryType.HOLD) == 1
    assert count(db, CardPayment.id) == 1
    assert shop.stock("chair") == 4
    assert ledger.verify_ledger(db, budget.id).ok


def test_a_dispatch_whose_capture_times_out_changes_nothing_then_succeeds(
    app,  # noqa: F811
    shop,
    db,
):
    state = app.extensions["marketplace"]
    client = app.test_client()
    budget = shop.budget(top_up=True, wheelchair_pence=30_000)
    placed = top_up_order(client, shop, budget, key="timeout-2")()
    assert placed.status_code == 201, placed.get_json()
    so_id = placed.get_json()["supplier_orders"][0]["id"]
    supplier = shop.other_supplier.headers
    accept = client.post(f"/api/v1/supplier-orders/{so_id}/accept", json={}, headers=supplier)
    assert accept.status_code == 200

    def dispatch():
        return client.post(f"/api/v1/supplier-orders/{so_id}/dispatch", json={}, headers=supplier)

    with stripe_timing_out(state):
        assert_problem(dispatch(), 503, code="payment-provider-unavailable")
    order = client.get(f"/api/v1/orders/{placed.get_json()['id']}", headers=shop.holder.headers)
    assert order.get_json()["supplier_orders"][0]["status"] == "accepted"
    assert count(db, LedgerEntry.id, LedgerEntry.entry_type == EntryType.CAPTURE) == 0
    assert db.scalar(select(CardPayment.status)) == "authorised"

    done = dispatch()
    assert done.status_code == 200, done.get_json()
    assert done.get_json()["status"] == "dispatched"
    assert count(db, LedgerEntry.id, LedgerEntry.entry_type == EntryType.CAPTURE) == 1
    assert db.scalar(select(CardPayment.status)) == "captured"
    assert ledger.verify_ledger(db, budget.id).ok
