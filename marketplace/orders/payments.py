"""Card payments through Stripe: one adapter on the official SDK.

PaymentIntents use manual capture: authorised when an order is placed, captured at dispatch,
cancelled on cancellation/rejection, refunded (in part or whole) after delivery. Every call
carries a deterministic idempotency key derived from the order and the operation, so a
business-level retry can never charge twice. Failures are translated into two exceptions the
orders service understands: ``CardDeclined`` (the customer's card said no: 402) and
``PaymentUnavailable`` (Stripe unreachable, timing out or failing: the order must not be left
half-made).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import stripe

from ..config import Settings
from ..errors import PaymentRequired, ServiceUnavailable

STRIPE_TIMEOUT_SECONDS = 10
CURRENCY = "gbp"


class CardDeclined(PaymentRequired):
    code = "card-declined"


class PaymentUnavailable(ServiceUnavailable):
    code = "payment-provider-unavailable"


@dataclass(frozen=True)
class Authorisation:
    intent_id: str
    status: str  # requires_capture when authorised
    amount_pence: int


@dataclass(frozen=True)
class Refund:
    refund_id: str
    amount_pence: int
    status: str


class PaymentGateway(Protocol):
    def authorise(
        self, *, reference: str, amount_pence: int, payment_method: str, description: str
    ) -> Authorisation: ...

    def capture(self, *, reference: str, intent_id: str, amount_pence: int) -> str: ...

    def cancel(self, *, reference: str, intent_id: str) -> str: ...

    def refund(
        self, *, reference: str, intent_id: str, amount_pence: int, sequence: int
    ) -> Refund: ...

    def retrieve(self, intent_id: str) -> str: ...


def idempotency_key(reference: str, operation: str, sequence: int = 0) -> str:
    """Deterministic per business operation: the same order and operation always send the same
    key, so Stripe answers a retry with the first result instead of charging again."""
    return f"marketplace:{reference}:{operation}:{sequence}"


class StripeGateway:
    def __init__(
        self,
        api_key: str,
        api_base: str | None = None,
        *,
        max_network_retries: int = 2,
        timeout_seconds: float = STRIPE_TIMEOUT_SECONDS,
    ):
        base_addresses = {"api": api_base} if api_base else {}
        self.client = stripe.StripeClient(
            api_key,
            base_addresses=base_addresses,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout_seconds),
        )

    def authorise(
        self, *, reference: str, amount_pence: int, payment_method: str, description: str
    ) -> Authorisation:
        params: dict[str, Any] = {
            "amount": amount_pence,
            "currency": CURRENCY,
            "payment_method": payment_method,
            "confirm": True,
            "capture_method": "manual",
            "metadata": {"reference": reference, "description": description[:500]},
        }
        intent = self._call(
            self.client.v1.payment_intents.create,
            params=params,
            options={"idempotency_key": idempotency_key(reference, "authorise")},
        )
        if intent.status != "requires_capture":
            raise CardDeclined(
                f"The card payment was not authorised (status {intent.status}).", decline_code=None
            )
        return Authorisation(intent_id=intent.id, status=intent.status, amount_pence=amount_pence)

    def capture(self, *, reference: str, intent_id: str, amount_pence: int) -> str:
        intent = self._call(
            self.client.v1.payment_intents.capture,
            intent_id,
            params={"amount_to_capture": amount_pence},
            options={"idempotency_key": idempotency_key(reference, "capture")},
        )
        return intent.status

    def cancel(self, *, reference: str, intent_id: str) -> str:
        intent = self._call(
            self.client.v1.payment_intents.cancel,
            intent_id,
            options={"idempotency_key": idempotency_key(reference, "cancel")},
        )
        return intent.status

    def refund(self, *, reference: str, intent_id: str, amount_pence: int, sequence: int) -> Refund:
        refund = self._call(
            self.client.v1.refunds.create,
            params={
                "payment_intent": intent_id,
                "amount": amount_pence,
                "metadata": {"reference": reference},
            },
            options={"idempotency_key": idempotency_key(reference, "refund", sequence)},
        )
        return Refund(refund_id=refund.id, amount_pence=refund.amount, status=refund.status)

    def retrieve(self, intent_id: str) -> str:
        return self._call(self.client.v1.payment_intents.retrieve, intent_id).status

    @staticmethod
    def _call(method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except stripe.CardError as error:
            stripe_error = error.error
            raise CardDeclined(
                error.user_message or "The card was declined.",
                decline_code=(stripe_error.decline_code if stripe_error else None) or error.code,
                stripe_code=error.code,
            ) from None
        except (stripe.APIConnectionError, stripe.RateLimitError) as error:
            raise PaymentUnavailable(
                "The card payment service did not answer; nothing was charged. Try again shortly.",
                headers={"Retry-After": "5"},
                stripe_error=type(error).__name__,
            ) from None
        except stripe.StripeError as error:
            raise PaymentUnavailable(
                "The card payment service refused the request; nothing was charged.",
                stripe_error=type(error).__name__,
                stripe_code=getattr(error, "code", None),
            ) from None


def gateway_from_settings(settings: Settings) -> StripeGateway | None:
    """The configured gateway, or None when card payments are not configured."""
    if not settings.stripe_api_key:
        return None
    return StripeGateway(settings.stripe_api_key, settings.stripe_api_base)


def verify_webhook(payload: bytes, signature: str | None, secret: str) -> stripe.Event:
    """The event, if the signature is valid for this payload; otherwise ``ValueError``."""
    if not signature:
        raise ValueError("missing Stripe-Signature header")
    try:
        return stripe.Webhook.construct_event(payload, signature, secret)
    except stripe.SignatureVerificationError as error:
        raise ValueError(f"bad signature: {error.user_message or 'does not match'}") from None
