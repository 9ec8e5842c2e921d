"""Secrets stay secret: the Stripe API key, the webhook signing secret and bearer tokens never
appear in a log line (JSON logs at DEBUG, the Stripe SDK's own included), in a response body
(successes, errors, ``/readyz``) or in the settings' ``repr``/``str``, on the happy path and on
the error paths (a declined card, Stripe unreachable, a forged webhook)."""

from __future__ import annotations

import io
import logging
import secrets
from collections.abc import Iterator

import pytest

from marketplace import create_app
from marketplace.web import JsonFormatter
from tests.conftest import _empty_all_tables
from tests.orders.conftest import free_port
from tests.orders.test_card_orders import DECLINING_CARD, card_order, post_event

API_KEY = "sk_test_" + secrets.token_hex(16)
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)


@pytest.fixture
def app(migrated, localstripe_url):
    settings = migrated.with_overrides(
        stripe_api_key=API_KEY,
        stripe_api_base=localstripe_url,
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    app = create_app(settings)
    _empty_all_tables(app.extensions["marketplace"].engine)
    yield app
    app.extensions["marketplace"].engine.dispose()


@pytest.fixture
def debug_log() -> Iterator[io.StringIO]:
    """Every log record of the process, at DEBUG, through the app's JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def assert_no_secret(text: str, *more: str) -> None:
    for secret in (API_KEY, WEBHOOK_SECRET, *more):
        assert secret not in text
        assert secret[-16:] not in text  # not even a tail of it


def test_settings_repr_and_str_hide_the_stripe_secrets(app):
    settings = app.extensions["marketplace"].settings
    assert settings.stripe_api_key == API_KEY  # it is there to be used...
    assert repr(settings).startswith("Settings(database_url=")
    for shown in (repr(settings), str(settings), repr(app.extensions["marketplace"])):
        assert_no_secret(shown)  # ...but never shown


def test_card_payments_and_webhooks_log_no_secret_at_debug(app, shop, debug_log):
    client = app.test_client()
    bodies = []
    placed = card_order(client, shop.buyer, [(shop.offers["chair"], 1)], key="ok")
    assert placed.status_code == 201, placed.get_json()
    bodies.append(placed.get_data(as_text=True))
    so = placed.get_json()["supplier_orders"][0]
    for action in ("accept", "dispatch"):
        response = client.post(
            f"/api/v1/supplier-orders/{so['id']}/{action}",
            json={},
            headers=shop.other_supplier.headers,
        )
        assert response.status_code == 200, response.get_json()
        bodies.append(response.get_data(as_text=True))

    declined = card_order(
        client,
        shop.buyer,
        [(shop.offers["gloves_a"], 1)],
        payment_method=_declining_payment_method(app),
        key="declined",
    )
    assert declined.status_code == 402, declined.get_json()
    bodies.append(declined.get_data(as_text=True))

    event = {
        "id": "evt_secret",
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {"object": {"id": so["card_payment"]["payment_intent_id"]}},
    }
    forged = post_event(client, event, secret="whsec_" + "0" * 32)
    assert forged.status_code == 400
    genuine = post_event(client, event, secret=WEBHOOK_SECRET)
    assert genuine.status_code == 200, genuine.get_json()
    bodies += [forged.get_data(as_text=True), genuine.get_data(as_text=True)]
    ready = client.get("/readyz")
    bodies.append(ready.get_data(as_text=True))

    logged = debug_log.getvalue()
    # The check has teeth: the Stripe SDK and the access log did write at DEBUG/INFO.
    assert '"logger": "stripe"' in logged
    assert '"logger": "marketplace.access"' in logged
    assert_no_secret(logged, shop.buyer.token)
    for body in bodies:
        assert_no_secret(body, shop.buyer.token)


def test_stripe_unreachable_logs_and_answers_no_secret(migrated, shop, debug_log):
    settings = migrated.with_overrides(
        stripe_api_key=API_KEY,
        stripe_api_base=f"http://127.0.0.1:{free_port()}",
        stripe_webhook_secret=WEBHOOK_SECRET,
    )
    offline = create_app(settings)
    logging.getLogger().setLevel(logging.DEBUG)  # create_app set the app's level
    try:
        response = card_order(offline.test_client(), shop.buyer, [(shop.offers["chair"], 1)])
        assert response.status_code == 503, response.get_json()
        assert_no_secret(response.get_data(as_text=True), shop.buyer.token)
        assert_no_secret(debug_log.getvalue(), shop.buyer.token)
        assert '"logger": "stripe"' in debug_log.getvalue()
    finally:
        offline.extensions["marketplace"].engine.dispose()


def _declining_payment_method(app) -> str:
    """A card payment method that localstripe declines at confirmation."""
    client = app.extensions["marketplace"].payment_gateway.client
    method = client.v1.payment_methods.create(params={"type": "card", "card": DECLINING_CARD})
    return method.id
