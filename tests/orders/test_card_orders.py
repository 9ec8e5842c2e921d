"""Card payments end to end against localstripe: authorise at order, capture at dispatch, cancel
on cancellation, partial refunds, declines, outages, top-ups and signed webhooks."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests
import stripe
from sqlalchemy import func, select
from werkzeug.serving import make_server

from marketplace import create_app
from marketplace.orders.models import CardPayment, Order, StripeEvent
from tests.conftest import _empty_all_tables
from tests.orders.conftest import ADDRESS, free_port, place_top_up, top_up_quote
from tests.support import assert_problem

WEBHOOK_SECRET = "whsec_marketplace_tests"
DECLINING_CARD = {"number": "4000000000000341", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.fixture
def app(migrated, localstripe_url):
    settings = migrated.with_overrides(
        stripe_api_key="sk_test_marketplace",
        stripe_api_base=localstripe_url,
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    app = create_app(settings)
    _empty_all_tables(app.extensions["marketplace"].engine)
    yield app
    app.extensions["marketplace"].engine.dispose()


def card_order(client, actor, lines, *, payment_method="pm_card_visa", key="card-1"):
    quote = client.post(
        "/api/v1/quotes",
        json={
            "lines": [{"offer_id": o.id, "quantity": q} for o, q in lines],
            "payment_method": "card",
        },
        headers=actor.headers,
    ).get_json()
    return client.post(
        "/api/v1/orders",
        json={
            "quote_id": quote["id"],
            "delivery_address": ADDRESS,
            "card_payment_method": payment_method,
        },
        headers=actor.headers | {"Idempotency-Key": key},
    )


def intent_status(app, intent_id: str) -> str:
    return app.extensions["marketplace"].payment_gateway.retrieve(intent_id)


def test_card_order_is_authorised_then_captured_at_dispatch_then_refunded(app, client, shop):
    response = card_order(
        client, shop.buyer, [(shop.offers["gloves_a"], 2), (shop.offers["chair"], 1)]
    )
    assert response.status_code == 201, response.get_json()
    placed = response.get_json()
    payments = {so["supplier_id"]: so["card_payment"] for so in placed["supplier_orders"]}
    assert all(p["status"] == "authorised" for p in payments.values())
    assert sum(p["amount_pence"] for p in payments.values()) == placed["gross_pence"]
    chair_so = next(
        so for so in placed["supplier_orders"] if so["supplier_id"] == shop.other_supplier.org.id
    )
    intent = chair_so["card_payment"]["payment_intent_id"]
    assert intent_status(app, intent) == "requires_capture"

    for action in ("accept", "dispatch"):
        r = client.post(
            f"/api/v1/supplier-orders/{chair_so['id']}/{action}",
            json={},
            headers=shop.other_supplier.headers,
        )
        assert r.status_code == 200, r.get_json()
    assert intent_status(app, intent) == "succeeded"
    client.post(
        f"/api/v1/supplier-orders/{chair_so['id']}/deliver",
        json={},
        headers=shop.other_supplier.headers,
    )
    refund = client.post(
        f"/api/v1/supplier-orders/{chair_so['id']}/refund",
        json={"amount_pence": 5_000, "reason": "Scuffed frame"},
        headers=shop.other_supplier.headers,
    )
    assert refund.status_code == 200, refund.get_json()
    assert refund.get_json()["card_payment"]["refunded_pence"] == 5_000
    assert refund.get_json()["card_payment"]["status"] == "partially_refunded"


def test_cancelling_a_card_order_cancels_the_authorisation(app, client, shop):
    placed = card_order(client, shop.buyer, [(shop.offers["chair"], 1)]).get_json()
    intent = placed["supplier_orders"][0]["card_payment"]["payment_intent_id"]
    cancelled = client.post(
        f"/api/v1/orders/{placed['id']}/cancel", json={}, headers=shop.buyer.headers
    )
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["supplier_orders"][0]["card_payment"]["status"] == "canceled"
    assert intent_status(app, intent) == "canceled"
    assert shop.stock("chair") == 5


def test_a_declined_card_is_402_and_leaves_nothing_behind(app, client, shop, db):
    gateway = app.extensions["marketplace"].payment_gateway
    method = gateway.client.v1.payment_methods.create(
        params={"type": "card", "card": DECLINING_CARD}
    )
    response = card_order(
        client,
        shop.buyer,
        [(shop.offers["gloves_a"], 1), (shop.offers["chair"], 1)],
        payment_method=method.id,
    )
    problem = assert_problem(response, 402, code="card-declined")
    assert problem["decline_code"] == "card_declined"
    db.rollback()
    assert db.scalar(select(func.count(Order.id))) == 0
    assert db.scalar(select(func.count(CardPayment.id))) == 0
    assert shop.stock("gloves_a") == 50
    assert shop.stock("chair") == 5


def test_stripe_unreachable_leaves_no_half_made_order(migrated, shop, db):
    settings = migrated.with_overrides(
        stripe_api_key="sk_test_x", stripe_api_base=f"http://127.0.0.1:{free_port()}"
    )
    offline = create_app(settings)
    response = card_order(offline.test_client(), shop.buyer, [(shop.offers["chair"], 1)])
    problem = assert_problem(response, 503, code="payment-provider-unavailable")
    assert "nothing was charged" in problem["detail"]
    assert response.headers["Retry-After"]
    db.rollback()
    assert db.scalar(select(func.count(Order.id))) == 0
    assert shop.stock("chair") == 5
    offline.extensions["marketplace"].engine.dispose()


def test_budget_with_card_top_up_holds_the_plan_part_and_authorises_the_rest(app, client, shop):
    budget = shop.budget(top_up=True, wheelchair_pence=30_000)
    quote = top_up_quote(client, shop, budget)
    assert quote["budget_pence"] == 30_000
    assert quote["card_pence"] == 12_000
    response = place_top_up(client, shop, quote, "topup")
    assert response.status_code == 201, response.get_json()
    so = response.get_json()["supplier_orders"][0]
    assert so["budget_pence"] == 30_000
    assert so["card_payment"]["amount_pence"] == 12_000
    balances = client.get(f"/api/v1/budgets/{budget.id}", headers=shop.holder.headers).get_json()[
        "balances"
    ]
    assert balances["held_pence"] == 30_000
    for action in ("accept", "dispatch"):
        assert (
            client.post(
                f"/api/v1/supplier-orders/{so['id']}/{action}",
                json={},
                headers=shop.other_supplier.headers,
            ).status_code
            == 200
        )
    balances = client.get(f"/api/v1/budgets/{budget.id}", headers=shop.holder.headers).get_json()[
        "balances"
    ]
    assert balances["spent_pence"] == 30_000
    assert intent_status(app, so["card_payment"]["payment_intent_id"]) == "succeeded"


def test_rejecting_a_top_up_order_cancels_its_card_authorisation(app, client, shop):
    """The manager's decision arrives through the budgets API; the orders domain reaches Stripe
    through the app's own gateway to cancel the card part."""
    budget = shop.budget(top_up=True, wheelchair_pence=30_000, threshold=20_000)
    placed = place_top_up(client, shop, top_up_quote(client, shop, budget), "topup-rejected")
    assert placed.status_code == 201, placed.get_json()
    order = placed.get_json()
    assert order["status"] == "pending_approval"
    intent = order["supplier_orders"][0]["card_payment"]["payment_intent_id"]
    assert intent_status(app, intent) == "requires_capture"

    decision = client.post(
        f"/api/v1/approvals/{order['approval_id']}/reject",
        json={"reason": "Choose the standard chair"},
        headers=shop.manager.headers,
    )
    assert decision.status_code == 200, decision.get_json()
    assert intent_status(app, intent) == "canceled"
    now = client.get(f"/api/v1/orders/{order['id']}", headers=shop.holder.headers).get_json()
    assert now["status"] == "rejected"
    assert now["supplier_orders"][0]["card_payment"]["status"] == "canceled"
    assert shop.stock("chair") == 5


def signed(payload: dict, secret: str = WEBHOOK_SECRET) -> tuple[bytes, str]:
    body = json.dumps(payload).encode()
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{body.decode()}", secret)
    return body, f"t={timestamp},v1={signature}"


def post_event(client, payload, secret=WEBHOOK_SECRET):
    body, header = signed(payload, secret)
    return client.post(
        "/api/v1/webhooks/stripe",
        data=body,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def test_webhooks_reconcile_once_and_refuse_bad_signatures(app, client, shop, db):
    placed = card_order(client, shop.buyer, [(shop.offers["chair"], 1)]).get_json()
    intent = placed["supplier_orders"][0]["card_payment"]["payment_intent_id"]
    event = {
        "id": "evt_1",
        "object": "event",
        "type": "payment_intent.canceled",
        "data": {"object": {"id": intent, "object": "payment_intent"}},
    }
    forged = post_event(client, event, secret="whsec_wrong")
    assert_problem(forged, 400, code="bad-signature")
    db.rollback()
    assert db.scalar(select(func.count(StripeEvent.id))) == 0
    assert db.scalar(select(CardPayment.status)) == "authorised"

    first = post_event(client, event)
    assert first.status_code == 200, first.get_json()
    assert "authorised -> canceled" in first.get_json()["outcome"]
    replay = post_event(client, event)
    assert replay.get_json()["outcome"].startswith("duplicate")
    db.rollback()
    assert db.scalar(select(CardPayment.status)) == "canceled"
    assert db.scalar(select(func.count(StripeEvent.id))) == 1
    so = client.get(f"/api/v1/orders/{placed['id']}", headers=shop.buyer.headers).get_json()[
        "supplier_orders"
    ][0]
    assert "canceled" in so["status_reason"]
    assert_problem(
        client.post(
            "/api/v1/webhooks/stripe", data=b"{}", headers={"Content-Type": "application/json"}
        ),
        400,
    )


def test_localstripe_delivers_signed_webhooks_to_the_app(app, shop, localstripe_url, db):
    """A real delivery: localstripe signs and posts events to the app served on loopback."""
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        hook = requests.post(
            f"{localstripe_url}/_config/webhooks/marketplace-{port}",
            data={
                "url": f"http://127.0.0.1:{port}/api/v1/webhooks/stripe",
                "secret": WEBHOOK_SECRET,
            },
            timeout=5,
        )
        assert hook.status_code == 200, hook.text
        client = app.test_client()
        placed = card_order(client, shop.buyer, [(shop.offers["chair"], 1)]).get_json()
        so_id = placed["supplier_orders"][0]["id"]
        client.post(
            f"/api/v1/supplier-orders/{so_id}/accept", json={}, headers=shop.other_supplier.headers
        )
        client.post(
            f"/api/v1/supplier-orders/{so_id}/dispatch",
            json={},
            headers=shop.other_supplier.headers,
        )
        deadline = time.monotonic() + 10
        types: set[str] = set()
        while time.monotonic() < deadline and "payment_intent.succeeded" not in types:
            db.rollback()
            types = set(db.scalars(select(StripeEvent.type)))
            time.sleep(0.2)
        assert "payment_intent.succeeded" in types
        db.rollback()
        assert db.scalar(select(CardPayment.status)) == "captured"
    finally:
        requests.delete(f"{localstripe_url}/_config/webhooks/marketplace-{port}", timeout=5)
        server.shutdown()


def test_reconcile_command_applies_what_stripe_says(
    app, client, shop, db, migrated, localstripe_url, monkeypatch
):
    from click.testing import CliRunner

    from marketplace import cli

    placed = card_order(client, shop.buyer, [(shop.offers["chair"], 1)]).get_json()
    intent = placed["supplier_orders"][0]["card_payment"]["payment_intent_id"]
    gateway = app.extensions["marketplace"].payment_gateway
    gateway.client.v1.payment_intents.cancel(intent)  # cancelled at Stripe, and no webhook arrives
    monkeypatch.setenv("DATABASE_URL", migrated.database_url)
    monkeypatch.setenv("STRIPE_API_KEY", "sk_test_marketplace")
    monkeypatch.setenv("STRIPE_API_BASE", localstripe_url)
    monkeypatch.setattr(cli, "_state", None)
    result = CliRunner().invoke(cli.main, ["payments", "reconcile"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "authorised -> canceled" in result.stdout
    db.rollback()
    assert db.scalar(select(CardPayment.status)) == "canceled"
    again = CliRunner().invoke(cli.main, ["payments", "reconcile"], catch_exceptions=False)
    assert "authorised -> canceled" not in again.stdout
    cli._state.engine.dispose()
