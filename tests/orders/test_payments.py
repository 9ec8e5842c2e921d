"""The Stripe adapter: against localstripe for what it supports, and with a recording fake for
what it does not (idempotency keys)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from marketplace.orders.payments import (
    CardDeclined,
    PaymentUnavailable,
    StripeGateway,
    idempotency_key,
    verify_webhook,
)

DECLINING_CARD = {"number": "4000000000000341", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


@pytest.fixture
def gateway(localstripe_url) -> StripeGateway:
    return StripeGateway("sk_test_marketplace", localstripe_url, max_network_retries=0)


def test_authorise_capture_and_partial_refund(gateway):
    auth = gateway.authorise(
        reference="ord_1", amount_pence=12_500, payment_method="pm_card_visa", description="x"
    )
    assert auth.status == "requires_capture"
    assert auth.intent_id.startswith("pi_")
    assert gateway.retrieve(auth.intent_id) == "requires_capture"
    assert (
        gateway.capture(reference="ord_1", intent_id=auth.intent_id, amount_pence=12_500)
        == "succeeded"
    )
    refund = gateway.refund(
        reference="ord_1", intent_id=auth.intent_id, amount_pence=2_500, sequence=1
    )
    assert refund.amount_pence == 2_500
    assert refund.status == "succeeded"


def test_authorise_then_cancel(gateway):
    auth = gateway.authorise(
        reference="ord_2", amount_pence=999, payment_method="pm_card_visa", description="x"
    )
    assert gateway.cancel(reference="ord_2", intent_id=auth.intent_id) == "canceled"
    assert gateway.retrieve(auth.intent_id) == "canceled"


def test_declined_card_is_a_402_with_the_decline_code(gateway):
    method = gateway.client.v1.payment_methods.create(
        params={"type": "card", "card": DECLINING_CARD}
    )
    with pytest.raises(CardDeclined) as raised:
        gateway.authorise(
            reference="ord_3", amount_pence=5_000, payment_method=method.id, description="x"
        )
    problem = raised.value.to_dict()
    assert problem["status"] == 402
    assert problem["decline_code"] == "card_declined"


def test_unreachable_stripe_is_payment_unavailable():
    with socket_closed_port() as url:
        gateway = StripeGateway("sk_test_x", url, max_network_retries=0, timeout_seconds=1)
        with pytest.raises(PaymentUnavailable) as raised:
            gateway.authorise(
                reference="ord_4", amount_pence=100, payment_method="pm_card_visa", description="x"
            )
    assert raised.value.status == 503
    assert raised.value.headers["Retry-After"]


class RecordingResource:
    def __init__(self, calls: list, result: dict):
        self.calls = calls
        self.result = result

    def __getattr__(self, operation):
        def call(*args, **kwargs):
            self.calls.append((operation, args, kwargs))
            return SimpleNamespace(**self.result)

        return call


def test_every_call_sends_a_deterministic_idempotency_key():
    calls: list = []
    gateway = StripeGateway("sk_test_x", "http://127.0.0.1:9")
    intent = {"id": "pi_1", "status": "requires_capture", "amount": 100}
    gateway.client = SimpleNamespace(
        v1=SimpleNamespace(
            payment_intents=RecordingResource(calls, intent),
            refunds=RecordingResource(calls, {"id": "re_1", "amount": 50, "status": "succeeded"}),
        )
    )
    for _ in range(2):  # a business-level retry sends the very same keys
        gateway.authorise(
            reference="ord_9", amount_pence=100, payment_method="pm_card_visa", description="x"
        )
        gateway.capture(reference="ord_9", intent_id="pi_1", amount_pence=100)
        gateway.refund(reference="ord_9", intent_id="pi_1", amount_pence=50, sequence=1)
        gateway.cancel(reference="ord_9", intent_id="pi_1")
    keys = [kwargs["options"]["idempotency_key"] for _op, _args, kwargs in calls]
    assert keys[:4] == keys[4:]
    assert keys[:4] == [
        idempotency_key("ord_9", "authorise"),
        idempotency_key("ord_9", "capture"),
        idempotency_key("ord_9", "refund", 1),
        idempotency_key("ord_9", "cancel"),
    ]
    assert len(set(keys[:4])) == 4


def test_webhook_signature_is_verified():
    import json
    import time

    import stripe

    secret = "whsec_test"
    payload = json.dumps(
        {
            "id": "evt_1",
            "object": "event",
            "type": "payment_intent.succeeded",
            "data": {"object": {}},
        }
    )
    timestamp = int(time.time())
    signature = stripe.WebhookSignature._compute_signature(f"{timestamp}.{payload}", secret)
    header = f"t={timestamp},v1={signature}"
    assert verify_webhook(payload.encode(), header, secret).id == "evt_1"
    with pytest.raises(ValueError, match="signature"):
        verify_webhook(payload.encode(), header.replace(signature[:6], "000000"), secret)
    with pytest.raises(ValueError, match="missing"):
        verify_webhook(payload.encode(), None, secret)


class socket_closed_port:
    """A loopback address where nothing listens."""

    def __enter__(self) -> str:
        from tests.orders.conftest import free_port

        return f"http://127.0.0.1:{free_port()}"

    def __exit__(self, *exc) -> None:
        return None
